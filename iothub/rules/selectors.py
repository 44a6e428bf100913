"""Reads of rules."""

from uuid import UUID

from django.db import connection
from django.db.models import QuerySet

from iothub.db import execute_prepared
from iothub.rules.models import Rule


def rule_list() -> QuerySet[Rule]:
    return Rule.objects.select_related("device", "device__device_type")


_RULE_FIELDS = Rule._meta.concrete_fields
_RULE_COLUMNS = [f.attname for f in _RULE_FIELDS]
# What the ORM's compiler would apply to each column (JSON text to Python for `action_config`);
# `Model.from_db` alone does not.
_CONVERTERS = [(i, f.from_db_value) for i, f in enumerate(_RULE_FIELDS) if hasattr(f, "from_db_value")]
# Every ingest request runs this, so it is written once here and prepared on the server rather
# than compiled by the ORM each time (which costs more than the query); the columns come from the
# model, and `idx_rule_device_enabled` (device_id, is_enabled) serves the WHERE.
_ENABLED_FOR_DEVICE_SQL = (
    "SELECT "  # noqa: S608 - the column names come from the model, the device id is a parameter
    + ", ".join(f'"{c}"' for c in _RULE_COLUMNS)
    + " FROM rules WHERE device_id = %s AND is_enabled = true ORDER BY id"
)


def rules_enabled_for_device(*, device_id: UUID) -> list[Rule]:
    """The device's enabled rules, in a stable order: one indexed query.

    Read on every ingest request rather than cached, so an edit through the API applies to the
    next message on every process; the read costs a fraction of the insert's.
    """
    rules = []
    for row in execute_prepared(_ENABLED_FOR_DEVICE_SQL, [device_id]):
        values = list(row)
        for index, convert in _CONVERTERS:
            values[index] = convert(values[index], None, connection)
        rules.append(Rule.from_db("default", _RULE_COLUMNS, values))
    return rules

"""Reads of rules."""

from uuid import UUID

from django.db.models import QuerySet

from iothub.db import execute_prepared, model_columns, model_from_row
from iothub.rules.models import Rule, RulePhase, RuleState


def rule_list() -> QuerySet[Rule]:
    return Rule.objects.select_related("device", "device__device_type", "state")


def rule_state_view(rule: Rule) -> dict:
    """A rule's state as the API and the dashboard show it; a rule without a state row is ok."""
    try:
        state = rule.state
    except RuleState.DoesNotExist:
        return {"phase": RulePhase.OK, "since": None, "last_reading_at": None, "open_event": None}
    return {
        "phase": state.phase,
        "since": state.since,
        "last_reading_at": state.last_reading_at,
        "open_event": state.open_event_id,
    }


_RULE_COLUMNS = model_columns(Rule)
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
    return [model_from_row(Rule, row) for row in execute_prepared(_ENABLED_FOR_DEVICE_SQL, [device_id])]

"""What ingest reads per request: the sending device, its type and its enabled rules, in one query.

One round trip instead of two, and read on every request, never cached: a rotated or revoked
token, a deleted device, an edited rule, all apply to the next message on every process.
"""

from dataclasses import dataclass

from iothub.db import execute_prepared, model_columns, model_from_row
from iothub.devices.models import Device, DeviceType
from iothub.devices.services import device_token_hash
from iothub.rules.models import Rule


@dataclass(frozen=True)
class Sender:
    device: Device  # with its device_type
    rules: list[Rule]  # enabled, by id


# Only what ingest and the events it raises use (the rest stays deferred, as with `.only()`): the
# device's `latest_metrics` alone can be kilobytes of JSON, and every timestamp costs its parsing.
_DEVICE_FIELDS = ["id", "device_type_id", "name", "serial_number", "location", "status"]
_TYPE_FIELDS = ["id", "name", "metric_name", "metric_unit", "metric_min", "metric_max"]
_RULE_FIELDS = [
    "id", "device_id", "name", "operator", "threshold", "action_config", "cooldown_minutes",
    "last_triggered_at", "is_enabled", "metric", "severity",
]  # fmt: skip
_DEVICE = model_columns(Device, _DEVICE_FIELDS)
_TYPE = model_columns(DeviceType, _TYPE_FIELDS)
_RULE = model_columns(Rule, _RULE_FIELDS)
# One row per enabled rule (or one row of NULL rule columns): the device's columns repeat, which
# costs less than a second round trip. `idx_rule_device_enabled` serves the join.
_SENDER_SQL = (
    "SELECT "  # noqa: S608 - the column names come from the models, the token is a parameter
    + ", ".join([*(f'd."{c}"' for c in _DEVICE), *(f't."{c}"' for c in _TYPE), *(f'r."{c}"' for c in _RULE)])
    + " FROM devices d JOIN device_types t ON t.id = d.device_type_id"
    + " LEFT JOIN rules r ON r.device_id = d.id AND r.is_enabled = true"
    + " WHERE d.token_hash = %s ORDER BY r.id"
)


def sender_get_by_token(*, token: str) -> Sender | None:
    """The device this bearer token belongs to, with its type and enabled rules; None for an
    unknown or revoked token."""
    if not token:
        return None
    rows = execute_prepared(_SENDER_SQL, [device_token_hash(token)])
    if not rows:
        return None
    first = rows[0]
    device = model_from_row(Device, first[: len(_DEVICE)], _DEVICE_FIELDS)
    device.device_type = model_from_row(DeviceType, first[len(_DEVICE) : len(_DEVICE) + len(_TYPE)], _TYPE_FIELDS)
    rule_start = len(_DEVICE) + len(_TYPE)
    rules = [model_from_row(Rule, row[rule_start:], _RULE_FIELDS) for row in rows if row[rule_start] is not None]
    for rule in rules:
        rule.device = device
    return Sender(device=device, rules=rules)

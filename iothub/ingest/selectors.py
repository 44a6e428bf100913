"""What ingest reads per batch: the sending devices, their types and their enabled rules, in one
query for the whole batch.

Read for every batch, never cached: a rotated or revoked token, a deleted device, an edited rule,
all apply to the next batch on every process.
"""

from collections.abc import Collection
from dataclasses import dataclass

from iothub.db import execute_prepared, model_columns, model_from_row
from iothub.devices.models import Device, DeviceType
from iothub.devices.services import device_token_hash
from iothub.rules.models import Rule


@dataclass(frozen=True)
class Sender:
    device: Device  # with its device_type
    rules: list[Rule]  # enabled, by id


@dataclass(frozen=True)
class Senders:
    """The senders a batch names, found by the hash of their token (HTTP) or by their serial
    number (MQTT, where the broker authenticated the device)."""

    by_token_hash: dict[str, Sender]
    by_serial_number: dict[str, Sender]


# Only what ingest and the events it raises use (the rest stays deferred, as with `.only()`): the
# device's `latest_metrics` alone can be kilobytes of JSON, and every timestamp costs its parsing.
_DEVICE_FIELDS = ["id", "device_type_id", "name", "serial_number", "location", "status"]
_TYPE_FIELDS = ["id", "name", "metric_name", "metric_unit", "metric_min", "metric_max"]
_RULE_FIELDS = [
    "id", "device_id", "name", "operator", "threshold", "action_config", "cooldown_minutes",
    "last_triggered_at", "is_enabled", "metric", "severity",
    "duration_seconds", "clear_threshold", "clear_duration_seconds", "auto_resolve", "dedupe_while_open",
    "reminder_minutes", "escalation",
]  # fmt: skip
_DEVICE = model_columns(Device, _DEVICE_FIELDS)
_TYPE = model_columns(DeviceType, _TYPE_FIELDS)
_RULE = model_columns(Rule, _RULE_FIELDS)
_RULE_START = 1 + len(_DEVICE) + len(_TYPE)
# One row per enabled rule (or one row of NULL rule columns) of each device: the device's columns
# repeat, which costs less than a second round trip. The unique indexes on `token_hash` and
# `serial_number` find the devices, `idx_rule_device_enabled` their rules.
_SENDERS_SQL = (
    "SELECT d.token_hash, "  # noqa: S608 - the column names come from the models, the rest are parameters
    + ", ".join([*(f'd."{c}"' for c in _DEVICE), *(f't."{c}"' for c in _TYPE), *(f'r."{c}"' for c in _RULE)])
    + " FROM devices d JOIN device_types t ON t.id = d.device_type_id"
    + " LEFT JOIN rules r ON r.device_id = d.id AND r.is_enabled = true"
    + " WHERE d.token_hash = ANY(%(token_hashes)s::text[]) OR d.serial_number = ANY(%(serial_numbers)s::text[])"
    + " ORDER BY d.id, r.id"
)


def senders_get(*, token_hashes: Collection[str] = (), serial_numbers: Collection[str] = ()) -> Senders:
    """The devices with these token hashes or serial numbers, each with its type and enabled rules."""
    by_token_hash: dict[str, Sender] = {}
    by_serial_number: dict[str, Sender] = {}
    if not token_hashes and not serial_numbers:
        return Senders(by_token_hash, by_serial_number)
    rows = execute_prepared(_SENDERS_SQL, {"token_hashes": list(token_hashes), "serial_numbers": list(serial_numbers)})
    current: Sender | None = None
    types: dict = {}  # a fleet has few types: each built once per lookup
    for row in rows:
        if current is None or current.device.id != row[1]:
            device = model_from_row(Device, row[1 : 1 + len(_DEVICE)], _DEVICE_FIELDS)
            type_id = row[1 + len(_DEVICE)]
            if type_id not in types:
                types[type_id] = model_from_row(DeviceType, row[1 + len(_DEVICE) : _RULE_START], _TYPE_FIELDS)
            device.device_type = types[type_id]
            current = Sender(device=device, rules=[])
            if row[0] is not None:
                by_token_hash[row[0]] = current
            by_serial_number[device.serial_number] = current
        if row[_RULE_START] is not None:
            rule = model_from_row(Rule, row[_RULE_START:], _RULE_FIELDS)
            rule.device = current.device
            current.rules.append(rule)
    return Senders(by_token_hash, by_serial_number)


def sender_get_by_token(*, token: str) -> Sender | None:
    """The device this bearer token belongs to, with its type and enabled rules; None for an
    unknown or revoked token."""
    if not token:
        return None
    token_hash = device_token_hash(token)
    return senders_get(token_hashes=[token_hash]).by_token_hash.get(token_hash)

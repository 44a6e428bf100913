"""Writes to the device registry, and the device credential.

Every write validates the whole row (`full_clean`) before it touches the database, so a refused
change writes nothing and its `ValidationError` names the field. Updates take a `data` mapping of
the fields to change (a partial update passes only those) and write only them, so that they never
overwrite `last_seen` or `status` which ingest moves concurrently.

A device's token is 32 random bytes (URL-safe base64), shown once when created or rotated; the
database keeps only its SHA-256. Tokens carry a short prefix so that a leaked one is recognisable
in logs and by secret scanners.
"""

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple
from uuid import UUID

import orjson
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from iothub.db import execute_prepared
from iothub.devices.broker import broker_credentials_changed, mqtt_password_hash
from iothub.devices.models import Device, DeviceStatus, DeviceType

TOKEN_PREFIX = "iot_"  # noqa: S105 - a marker, not a secret

DEVICE_TYPE_UPDATABLE_FIELDS = (
    "name",
    "description",
    "metric_name",
    "metric_unit",
    "metric_min",
    "metric_max",
)
# `last_seen` is not here: only ingest moves it.
DEVICE_UPDATABLE_FIELDS = ("device_type", "name", "serial_number", "location", "status")


def device_token_generate() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def device_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class DeviceWithToken:
    device: Device
    token: str  # the plaintext, to be shown once and never stored


def device_type_create(
    *,
    name: str,
    metric_name: str,
    metric_unit: str,
    description: str | None = None,
    metric_min: Decimal | None = None,
    metric_max: Decimal | None = None,
) -> DeviceType:
    device_type = DeviceType(
        name=name,
        metric_name=metric_name,
        metric_unit=metric_unit,
        description=description,
        metric_min=metric_min,
        metric_max=metric_max,
    )
    device_type.full_clean()
    device_type.save()
    return device_type


@transaction.atomic
def device_type_update(*, device_type: DeviceType, data: Mapping[str, Any]) -> DeviceType:
    """Change the given fields of a device type; the result must still satisfy min <= max."""
    # Re-read under a row lock: two concurrent partial updates (one moving metric_min, the other
    # metric_max) would otherwise each pass validation and together store an inverted range.
    locked = DeviceType.objects.select_for_update().get(pk=device_type.pk)
    changed = _assign(locked, data, allowed=DEVICE_TYPE_UPDATABLE_FIELDS)
    locked.full_clean()
    if changed:
        locked.save(update_fields=changed)
    return locked


@transaction.atomic
def device_type_delete(*, device_type: DeviceType) -> None:
    """Delete a device type. Refused with `ProtectedError` while devices of this type exist."""
    device_type.delete()


@transaction.atomic
def device_create(
    *,
    device_type: DeviceType,
    name: str,
    serial_number: str,
    location: str | None = None,
    status: str | None = None,
) -> DeviceWithToken:
    token = device_token_generate()
    device = Device(
        device_type=device_type,
        name=name,
        serial_number=serial_number,
        location=location,
        token_hash=device_token_hash(token),
        mqtt_password_hash=mqtt_password_hash(token),
    )
    if status is not None:
        device.status = status
    device.full_clean(exclude=["token_hash", "mqtt_password_hash"])
    device.save()
    broker_credentials_changed()
    return DeviceWithToken(device=device, token=token)


@transaction.atomic
def device_update(*, device: Device, data: Mapping[str, Any]) -> Device:
    """Change the given fields of a device (not its credential, not `last_seen`)."""
    changed = _assign(device, data, allowed=DEVICE_UPDATABLE_FIELDS)
    device.full_clean(exclude=["token_hash", "mqtt_password_hash"])
    if changed:
        device.save(update_fields=[*changed, "updated_at"])
    if "serial_number" in changed:  # the device's MQTT username
        broker_credentials_changed()
    return device


@transaction.atomic
def device_delete(*, device: Device) -> None:
    """Delete a device with everything recorded about it: its telemetry, its rules, their events
    and those events' notification deliveries; its MQTT access ends with it."""
    device.delete()
    broker_credentials_changed()


@transaction.atomic
def device_rotate_token(*, device: Device) -> DeviceWithToken:
    """Give the device a new token; the old one stops working when this commits (over MQTT too,
    open connections included: iothub/devices/broker.py)."""
    token = device_token_generate()
    device.token_hash = device_token_hash(token)
    device.mqtt_password_hash = mqtt_password_hash(token)
    device.save(update_fields=["token_hash", "mqtt_password_hash", "updated_at"])
    broker_credentials_changed()
    return DeviceWithToken(device=device, token=token)


def device_revoke_token(*, device: Device) -> None:
    """Leave the device without a credential: it can no longer send until a token is rotated in."""
    device.token_hash = None
    device.mqtt_password_hash = None
    device.save(update_fields=["token_hash", "mqtt_password_hash", "updated_at"])
    broker_credentials_changed()


def _assign(instance, data: Mapping[str, Any], *, allowed: Iterable[str]) -> list[str]:
    """Set the given fields on the instance; returns their names. A field outside `allowed` is a
    programming error, not bad input, so it raises TypeError as an unknown keyword would."""
    unknown = set(data) - set(allowed)
    if unknown:
        raise TypeError(f"{type(instance).__name__} fields not updatable here: {', '.join(sorted(unknown))}")
    for field, value in data.items():
        setattr(instance, field, value)
    return list(data)


def devices_mark_inactive(*, silent_for: timedelta, now: datetime | None = None) -> int:
    """Mark `inactive` every device not already so whose last reading is older than `silent_for`,
    or that has never reported since it was registered that long ago; returns how many changed.
    The next reading makes it active again (ingest)."""
    cutoff = (now or timezone.now()) - silent_for
    return (
        Device.objects.filter(Q(last_seen__lt=cutoff) | Q(last_seen__isnull=True, created_at__lt=cutoff))
        .exclude(status=DeviceStatus.INACTIVE)
        .update(status=DeviceStatus.INACTIVE, updated_at=timezone.now())
    )


class ReadingSeen(NamedTuple):
    """What a device's state keeps of one stored reading: its row id, its time, its metrics."""

    telemetry_id: int
    timestamp: datetime
    metrics: Mapping[str, Any]


# The batch comes as one JSON document, `[[id, last_seen, latest], ...]` (one orjson call, where
# array parameters cost psycopg a quoting pass per element).
#
# Locked in one order, the devices' ids, before anything changes: `locked` is a SELECT ... ORDER BY id
# FOR NO KEY UPDATE, whose row locks are taken in that order, and the UPDATE writes only rows that
# came out of it, already held. Two transactions updating overlapping sets of devices then queue on
# the first device they share instead of deadlocking.
_UPDATE_SQL = """
UPDATE devices AS d SET
    last_seen = GREATEST(d.last_seen, n.last_seen),
    status = CASE
        WHEN n.latest ? t.metric_name
             AND (d.last_seen IS NULL OR (n.latest -> t.metric_name ->> 'timestamp')::timestamptz >= d.last_seen) THEN
            CASE WHEN (n.latest -> t.metric_name -> 'value')::numeric < t.metric_min
                   OR (n.latest -> t.metric_name -> 'value')::numeric > t.metric_max THEN 'error'
                 ELSE 'active' END
        WHEN d.status = 'inactive' THEN 'active'
        ELSE d.status
    END,
    latest_metrics = (
        SELECT jsonb_object_agg(
            key,
            CASE
                WHEN old.value IS NULL THEN new.value
                WHEN new.value IS NULL THEN old.value
                WHEN (new.value ->> 'timestamp')::timestamptz >= (old.value ->> 'timestamp')::timestamptz
                    THEN new.value
                ELSE old.value
            END
        )
        FROM jsonb_each(COALESCE(d.latest_metrics, '{}'::jsonb)) AS old(key, value)
        FULL JOIN jsonb_each(n.latest) AS new(key, value) USING (key)
    )
FROM (
        SELECT (r ->> 0)::uuid AS id, (r ->> 1)::timestamptz AS last_seen, r -> 2 AS latest
        FROM jsonb_array_elements(%(rows)s::jsonb) AS r
     ) AS n,
     (
        SELECT id FROM devices
        WHERE id IN (SELECT (r ->> 0)::uuid FROM jsonb_array_elements(%(rows)s::jsonb) AS r)
        ORDER BY id FOR NO KEY UPDATE
     ) AS locked,
     device_types AS t
WHERE d.id = locked.id AND n.id = locked.id AND t.id = d.device_type_id
RETURNING d.id, d.status
"""


def devices_record_readings(*, readings: Mapping[UUID, Sequence[ReadingSeen]]) -> dict[UUID, str]:
    """Record in each device's row what its newly stored readings say (last seen, status, latest
    values), inside the caller's transaction; returns each device's status afterwards.

    The rows are locked in the order of their ids before they change, so concurrent batches that
    share devices take turns rather than deadlock, and none can move `last_seen` back or replace a
    newer latest value with an older one.
    """
    # In the order of the ids as PostgreSQL sorts uuids (their bytes, which is their integer value);
    # comparing UUID objects themselves is many times slower.
    ids = sorted(readings, key=lambda device_id: device_id.int)
    if not ids:
        return {}
    document = []
    for device_id in ids:
        # Newest first (ties: the later row), so each metric's first sighting is its newest value.
        newest_first = sorted(readings[device_id], key=lambda r: (r.timestamp, r.telemetry_id), reverse=True)
        newest: dict[str, ReadingSeen] = {}
        for reading in newest_first:
            for metric in reading.metrics:
                if metric not in newest:
                    newest[metric] = reading
        latest = {
            metric: {
                "value": reading.metrics[metric],
                "timestamp": reading.timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "telemetry_id": reading.telemetry_id,
            }
            for metric, reading in newest.items()
        }
        document.append((device_id, newest_first[0].timestamp, latest))
    rows = execute_prepared(_UPDATE_SQL, {"rows": orjson.dumps(document).decode()})
    return dict(rows)

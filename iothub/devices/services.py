"""Writes to the device registry, and the device credential.

A device's token is 32 random bytes (URL-safe base64), shown once when created or rotated; the
database keeps only its SHA-256. Tokens carry a short prefix so that a leaked one is recognisable
in logs and by secret scanners.
"""

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction

from iothub.devices.models import Device, DeviceStatus, DeviceType

TOKEN_PREFIX = "iot_"  # noqa: S105 - a marker, not a secret


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
    metric_min=None,
    metric_max=None,
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
    )
    if status is not None:
        device.status = status
    device.full_clean(exclude=["token_hash"])
    device.save()
    return DeviceWithToken(device=device, token=token)


@transaction.atomic
def device_rotate_token(*, device: Device) -> DeviceWithToken:
    """Give the device a new token; the old one stops working when this commits."""
    token = device_token_generate()
    device.token_hash = device_token_hash(token)
    device.save(update_fields=["token_hash", "updated_at"])
    return DeviceWithToken(device=device, token=token)


def device_revoke_token(*, device: Device) -> None:
    """Leave the device without a credential: it can no longer send until a token is rotated in."""
    device.token_hash = None
    device.save(update_fields=["token_hash", "updated_at"])


def device_value_in_range(*, device_type: DeviceType, value) -> bool:
    """Whether a primary-metric value lies within the type's expected [metric_min, metric_max]."""
    number = Decimal(str(value))
    if device_type.metric_min is not None and number < device_type.metric_min:
        return False
    return not (device_type.metric_max is not None and number > device_type.metric_max)


@dataclass(frozen=True)
class MetricValue:
    value: int | float
    timestamp: datetime
    telemetry_id: int


# One statement, atomic under the row lock, so concurrent requests of one device can neither move
# last_seen backwards nor overwrite a newer latest value with an older one. In an UPDATE, the
# column names on the right-hand side read the row as it was.
_RECORD_READINGS_SQL = """
    UPDATE devices SET
        last_seen = GREATEST(last_seen, %(seen_at)s),
        status = CASE
            WHEN %(primary_at)s::timestamptz IS NOT NULL
                 AND (last_seen IS NULL OR %(primary_at)s::timestamptz >= last_seen) THEN %(primary_status)s
            WHEN status = 'inactive' THEN 'active'
            ELSE status
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
            FROM jsonb_each(COALESCE(devices.latest_metrics, '{}'::jsonb)) AS old(key, value)
            FULL JOIN jsonb_each(%(latest)s::jsonb) AS new(key, value) USING (key)
        )
    WHERE id = %(device_id)s
    RETURNING status, last_seen
"""


def device_record_readings(*, device: Device, latest: dict[str, MetricValue]) -> None:
    """Record that the device reported: `last_seen` moves forward only, the latest value of each
    metric is kept, and the status follows DESIGN: `error` while the newest primary-metric reading
    lies outside the type's range, `active` otherwise (an old, buffered reading changes nothing).

    `latest` holds, per metric, the newest value among the readings just stored.
    """
    device_type = device.device_type
    primary = latest.get(device_type.metric_name)
    primary_status = None
    if primary is not None:
        in_range = device_value_in_range(device_type=device_type, value=primary.value)
        primary_status = DeviceStatus.ACTIVE if in_range else DeviceStatus.ERROR
    params = {
        "device_id": device.id,
        "seen_at": max(m.timestamp for m in latest.values()),
        "primary_at": primary.timestamp if primary else None,
        "primary_status": primary_status,
        "latest": json.dumps(
            {
                name: {"value": m.value, "timestamp": m.timestamp.isoformat(), "telemetry_id": m.telemetry_id}
                for name, m in latest.items()
            }
        ),
    }
    with connection.cursor() as cursor:
        cursor.execute(_RECORD_READINGS_SQL, params)
        device.status, device.last_seen = cursor.fetchone()

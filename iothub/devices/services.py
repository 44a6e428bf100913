"""Writes to the device registry, and the device credential.

A device's token is 32 random bytes (URL-safe base64), shown once when created or rotated; the
database keeps only its SHA-256. Tokens carry a short prefix so that a leaked one is recognisable
in logs and by secret scanners.
"""

import hashlib
import secrets
from dataclasses import dataclass

from django.db import transaction

from iothub.devices.models import Device, DeviceType

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

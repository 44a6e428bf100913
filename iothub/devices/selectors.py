"""Reads of the device registry."""

from iothub.devices.models import Device
from iothub.devices.services import device_token_hash


def device_get_by_token(*, token: str) -> Device | None:
    """The device this bearer token belongs to, with its type; None for an unknown or revoked one."""
    if not token:
        return None
    return Device.objects.select_related("device_type").filter(token_hash=device_token_hash(token)).first()

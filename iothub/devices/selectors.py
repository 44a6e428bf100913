"""Reads of the device registry."""

from django.db.models import QuerySet

from iothub.devices.models import Device, DeviceType
from iothub.devices.services import device_token_hash


def device_type_list() -> QuerySet[DeviceType]:
    return DeviceType.objects.order_by("name")


def device_list() -> QuerySet[Device]:
    """Devices with their type, by name; `id` breaks ties so that pages never overlap."""
    return Device.objects.select_related("device_type").order_by("name", "id")


def device_list_columns(*fields: str) -> QuerySet[Device]:
    """`device_list` reading only these columns of the device (by field name) and not its type:
    for a list that shows a few columns of many devices, without decoding the others (the
    `latest_metrics` JSON, the credential hashes) or building a DeviceType per row."""
    columns = [Device._meta.get_field(name).attname for name in fields]
    return Device.objects.only(*columns).order_by("name", "id")


def device_get_by_token(*, token: str) -> Device | None:
    """The device this bearer token belongs to, with its type; None for an unknown or revoked one.

    (Ingest reads the sender with its rules in one prepared query of its own,
    `iothub.ingest.selectors.sender_get_by_token`.)
    """
    if not token:
        return None
    return Device.objects.select_related("device_type").filter(token_hash=device_token_hash(token)).first()

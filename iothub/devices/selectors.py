"""Reads of the device registry."""

from django.db.models import QuerySet

from iothub.db import execute_prepared, model_columns, model_from_row
from iothub.devices.models import Device, DeviceType
from iothub.devices.services import device_token_hash


def device_type_list() -> QuerySet[DeviceType]:
    return DeviceType.objects.order_by("name")


def device_list() -> QuerySet[Device]:
    """Devices with their type, by name; `id` breaks ties so that pages never overlap."""
    return Device.objects.select_related("device_type").order_by("name", "id")


_DEVICE_COLUMNS = model_columns(Device)
_TYPE_COLUMNS = model_columns(DeviceType)
# Every ingest request runs this, so it is written once here rather than compiled by the ORM each
# time (which costs more than the query itself); the column lists come from the models.
_BY_TOKEN_SQL = (
    "SELECT "  # noqa: S608 - the column names come from the models, the token is a parameter
    + ", ".join([*(f'd."{c}"' for c in _DEVICE_COLUMNS), *(f't."{c}"' for c in _TYPE_COLUMNS)])
    + " FROM devices d JOIN device_types t ON t.id = d.device_type_id WHERE d.token_hash = %s"
)


def device_get_by_token(*, token: str) -> Device | None:
    """The device this bearer token belongs to, with its type; None for an unknown or revoked one.

    Read on every request, never cached, so that a rotated or revoked token stops working at once.
    """
    if not token:
        return None
    rows = execute_prepared(_BY_TOKEN_SQL, [device_token_hash(token)])
    if not rows:
        return None
    row = rows[0]
    device = model_from_row(Device, row[: len(_DEVICE_COLUMNS)])
    device.device_type = model_from_row(DeviceType, row[len(_DEVICE_COLUMNS) :])
    return device

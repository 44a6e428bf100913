"""The demo data: the spec's example device type and device, created through the registry services.

Loading is idempotent: rows that exist (matched by type name and serial number) are left exactly as
they are, so a person's edits to the demo device survive the next run.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from iothub.devices.models import Device, DeviceType
from iothub.devices.services import device_create, device_type_create

DEMO_DEVICE_TYPE = {
    "name": "vibration_sensor",
    "description": "Vibration sensor on a press (demo data)",
    "metric_name": "vibration",
    "metric_unit": "mm_s",
    "metric_min": Decimal("0"),
    "metric_max": Decimal("25"),
}
DEMO_DEVICE = {"serial_number": "VIB-SN-001", "name": "Press 3", "location": "Workshop A"}


@dataclass(frozen=True)
class DemoData:
    device_type: DeviceType
    device: Device
    device_type_created: bool
    device_created: bool


@transaction.atomic
def demo_load() -> DemoData:
    """Create the demo device type and device where missing; return them and what was created."""
    device_type = DeviceType.objects.filter(name=DEMO_DEVICE_TYPE["name"]).first()
    device_type_created = device_type is None
    if device_type is None:
        device_type = device_type_create(**DEMO_DEVICE_TYPE)

    device = Device.objects.filter(serial_number=DEMO_DEVICE["serial_number"]).first()
    device_created = device is None
    if device is None:
        # The new device's token is not kept: whoever needs it rotates one (see `demo_access`).
        device = device_create(device_type=device_type, **DEMO_DEVICE).device
    return DemoData(device_type, device, device_type_created, device_created)


def demo_device_get() -> Device | None:
    return Device.objects.select_related("device_type").filter(serial_number=DEMO_DEVICE["serial_number"]).first()

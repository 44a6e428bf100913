"""`python manage.py load_demo`: the spec's example device type and device, idempotently."""

from django.core.management.base import BaseCommand

from iothub.devices.demo import demo_load


class Command(BaseCommand):
    help = (
        "Create the demo device type `vibration_sensor` (vibration in mm_s, 0..25) and the device "
        'VIB-SN-001 "Press 3" in Workshop A where missing. Existing rows are left as they are. '
        "The device's token is not printed: `demo_access` (or the API's rotate-token) issues one."
    )

    def handle(self, *args, **options):
        demo = demo_load()
        device_type, device = demo.device_type, demo.device
        self.stdout.write(f"device type {device_type.name}: {'created' if demo.device_type_created else 'present'}")
        self.stdout.write(
            f'device {device.serial_number} "{device.name}" in {device.location or "no location"}: '
            f"{'created' if demo.device_created else 'present'}"
        )

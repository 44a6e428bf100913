"""`python manage.py load_demo`: the spec's example device type and device, idempotently; with
`--alerts`, the demo's alerting too (a template and a rule, iothub.notifications.demo).

It lives in the notifications app, not in devices, because it composes both: notifications sit
above devices (imports point down), so this is the lowest app that may call both demos."""

from django.core.management.base import BaseCommand

from iothub.devices.demo import demo_load
from iothub.notifications.demo import demo_alerts_load


class Command(BaseCommand):
    help = (
        "Create the demo device type `vibration_sensor` (vibration in mm_s, 0..25) and the device "
        'VIB-SN-001 "Press 3" in Workshop A where missing. Existing rows are left as they are. '
        "The device's token is not printed: `demo_access` (or the API's rotate-token) issues one."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--alerts",
            metavar="WEBHOOK_URL",
            help="also the demo template (email to ops@example.com and this webhook) and the rule "
            "`vibration > 15` on the demo device",
        )

    def handle(self, *args, alerts: str | None = None, **options):
        demo = demo_load()
        device_type, device = demo.device_type, demo.device
        self.stdout.write(f"device type {device_type.name}: {'created' if demo.device_type_created else 'present'}")
        self.stdout.write(
            f'device {device.serial_number} "{device.name}" in {device.location or "no location"}: '
            f"{'created' if demo.device_created else 'present'}"
        )
        if alerts:
            loaded = demo_alerts_load(device=device, webhook_url=alerts)
            self.stdout.write(
                f'template "{loaded.template.name}": {"created" if loaded.template_created else "present"}'
            )
            self.stdout.write(
                f'rule "{loaded.rule.name}" (vibration > 15): {"created" if loaded.rule_created else "present"}'
            )

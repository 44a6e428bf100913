"""`python manage.py telemetry_rollups_rebuild [--device ID] [--from T] [--to T]`: the roll-ups
computed again from the readings (docs/telemetry.md), in one transaction."""

from datetime import datetime

from django.core.management.base import BaseCommand
from django.db import transaction

from iothub.telemetry.services import telemetry_rollups_rebuild


class Command(BaseCommand):
    help = "Compute the telemetry roll-ups again from the readings (after rows were written in SQL)."

    def add_arguments(self, parser):
        parser.add_argument("--device", help="only this device (its id)")
        parser.add_argument("--from", dest="start", type=datetime.fromisoformat, help="ISO 8601, with an offset")
        parser.add_argument("--to", dest="end", type=datetime.fromisoformat, help="ISO 8601, with an offset")

    def handle(self, *args, device=None, start=None, end=None, **options):
        with transaction.atomic():
            written = telemetry_rollups_rebuild(device_id=device, start=start, end=end)
        self.stdout.write(f"roll-ups rebuilt: {written} rows")

"""`python manage.py setup_timescaledb`: the spec's setup of the telemetry hypertable.

Idempotent; prints one line per step with what it did and the resulting state.
"""

from django.core.management.base import BaseCommand

from iothub.telemetry.chunks import chunk_order_report
from iothub.telemetry.timescale import timescale_setup


class Command(BaseCommand):
    help = (
        "Make `telemetry` a TimescaleDB hypertable (7-day chunks) with its GIN index, and set up "
        "compression and retention where the licence allows; report what is unavailable."
    )

    def handle(self, *args, **options):
        for line in timescale_setup():
            self.stdout.write(line)
        self.stdout.write(chunk_order_report())

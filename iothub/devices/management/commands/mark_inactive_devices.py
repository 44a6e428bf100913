"""`python manage.py mark_inactive_devices`: mark silent devices inactive (the worker also does
this periodically)."""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from iothub.devices.services import devices_mark_inactive


class Command(BaseCommand):
    help = "Mark devices inactive that sent no telemetry for IOTHUB_INACTIVE_AFTER_SECONDS (default 600)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--after-seconds",
            type=int,
            default=settings.IOTHUB_INACTIVE_AFTER_SECONDS,
            help="Silence after which a device is inactive (default: the setting).",
        )

    def handle(self, *args, after_seconds: int, **options):
        if after_seconds < 1:
            self.stderr.write("--after-seconds must be at least 1")
            raise SystemExit(2)
        changed = devices_mark_inactive(silent_for=timedelta(seconds=after_seconds))
        self.stdout.write(f"{changed} device(s) marked inactive (silent for more than {after_seconds} s)")

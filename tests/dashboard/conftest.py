"""Fixtures of the dashboard tests: a device with an hour of readings, a rule and its event, and
browser-like clients logged in with each role."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from iothub.events.models import Event
from iothub.ingest.services import telemetry_ingest
from iothub.rules.models import Rule
from iothub.telemetry.services import NewReading


def store_readings(device, values, *, every=timedelta(minutes=1), end=None):
    """Store one reading per value, `every` apart, the last at `end` (default now), through the
    ingest service (rows, last_seen, status and latest_metrics as ingest writes them)."""
    end = end or timezone.now()
    readings = [
        NewReading(
            timestamp=end - every * (len(values) - 1 - n),
            payload={"version": "0.0.1", "serial_number": device.serial_number, "metrics": metrics},
        )
        for n, metrics in enumerate(values)
    ]
    return telemetry_ingest(device=device, readings=readings).readings


@pytest.fixture
def hour_of_readings(device):
    """60 readings of vibration (and temperature), one a minute, ending now."""
    return store_readings(device, [{"vibration": 4 + (n % 5) * 0.5, "temperature": 40 + n * 0.1} for n in range(60)])


@pytest.fixture
def rule(device):
    return Rule.objects.create(
        device=device,
        name="High vibration",
        operator="gt",
        threshold=Decimal("15"),
        action_config=[],
        severity="critical",
    )


@pytest.fixture
def event(rule, hour_of_readings):
    reading = hour_of_readings[-1]
    return Event.objects.create(
        rule=rule,
        telemetry_id=reading.id,
        timestamp=reading.timestamp,
        severity="critical",
        message='Vibration 16.2 mm_s > 15 on "Press 3" (Workshop A), rule "High vibration"',
        execution_results=[{"type": "stop_machine", "machine_id": "M-123", "status": "failed", "error": "API timeout"}],
        metadata={"reading": {"telemetry_id": reading.id, "metric": "vibration", "value": 16.2}},
    )


def _logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def operator_web(operator_user) -> Client:
    return _logged_in(operator_user)


@pytest.fixture
def viewer_web(viewer_user) -> Client:
    return _logged_in(viewer_user)

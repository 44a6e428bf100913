"""Fixtures of the dashboard tests: a device with an hour of readings, a rule and its event, and
browser-like clients logged in with each role."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from iothub.events.services import event_action_result_update
from iothub.ingest.services import telemetry_ingest
from iothub.rules.services import rule_create
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
    return rule_create(
        device=device,
        name="High vibration",
        operator="gt",
        threshold=Decimal("15"),
        action_config=[{"type": "stop_machine", "machine_id": "M-123"}],
        severity="critical",
    )


@pytest.fixture
def event(device, rule):
    """The event ingest raised on a reading of 16.2 (stored last, after an hour of normal ones),
    whose stop_machine call then failed."""
    store_readings(
        device, [{"vibration": 4 + (n % 5) * 0.5} for n in range(59)], end=timezone.now() - timedelta(minutes=1)
    )
    reading = NewReading(
        timestamp=timezone.now(),
        payload={"version": "0.0.1", "serial_number": device.serial_number, "metrics": {"vibration": 16.2}},
    )
    (raised,) = telemetry_ingest(device=device, readings=[reading]).events
    event_action_result_update(event_id=raised.id, index=0, changes={"status": "failed", "error": "API timeout"})
    raised.refresh_from_db()
    return raised


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

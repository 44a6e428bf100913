"""The ingest path: one request's readings stored, the device's state recorded, the rules
evaluated, in one transaction. The caller replies only after it commits, so an acknowledged
reading is a committed one."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from iothub.devices.models import Device
from iothub.devices.services import MetricValue, device_record_readings
from iothub.events.models import Event
from iothub.ingest.evaluation import readings_evaluate
from iothub.telemetry.services import NewReading, StoredReading, telemetry_store


@dataclass(frozen=True)
class IngestResult:
    readings: list[StoredReading]
    events: list[Event]


def telemetry_ingest(*, device: Device, readings: Sequence[NewReading]) -> IngestResult:
    """Store validated readings of one device; all or nothing."""
    with transaction.atomic():
        stored = telemetry_store(device_id=device.id, readings=readings)
        device_record_readings(device=device, latest=_latest_values(stored))
        # The rules engine's place: inside the transaction, after the rows exist.
        events = readings_evaluate(device=device, readings=stored)
    return IngestResult(readings=stored, events=events)


def _latest_values(readings: Sequence[StoredReading]) -> dict[str, MetricValue]:
    """Per metric, the value of the newest reading that carries it (the later row on a tie)."""
    latest: dict[str, MetricValue] = {}
    for reading in readings:
        for name, value in reading.metrics.items():
            current = latest.get(name)
            if current is None or reading.timestamp >= current.timestamp:
                latest[name] = MetricValue(value=value, timestamp=reading.timestamp, telemetry_id=reading.id)
    return latest

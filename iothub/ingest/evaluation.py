"""Where the rules engine plugs into ingest: the stored readings of one request, evaluated against
the device's enabled rules inside the ingest transaction.

Everything an event must do afterwards is written as rows here (outbox); nothing external is
called inside the transaction.
"""

from collections.abc import Sequence

from iothub.devices.models import Device
from iothub.events.models import Event
from iothub.telemetry.services import StoredReading


def readings_evaluate(*, device: Device, readings: Sequence[StoredReading]) -> list[Event]:
    """Evaluate the device's enabled rules on the readings, in timestamp order; return the events
    raised. Runs inside the ingest transaction, after the readings are inserted."""
    return []

"""`manage.py simulate` against a running hub (a live server on the test database): what its
summary says is what the database holds."""

import io
import re

import pytest
from django.core.management import CommandError, call_command

from iothub.devices.models import Device
from iothub.events.models import Event
from iothub.simulator.profiles import Machine
from iothub.simulator.runner import SimulatedDevice, Simulation
from iothub.telemetry.models import Telemetry
from tests.dashboard.conftest import store_readings


def summary_of(output: str) -> dict[str, int]:
    return {
        name: int(n)
        for name, n in re.findall(r"^\s+(sent|rejected|failed|anomalies|events raised)\s+(\d+)$", output, re.M)
    }


@pytest.fixture
def current_chunk(device):
    """A reading stored first, so that the hypertable's current chunk exists before the concurrent
    senders start: TimescaleDB creating a chunk while other transactions insert into the same
    range can deadlock (the chunk's foreign key locks `devices`, which those inserts hold), and a
    few 500s would make the exact counts below vary. The summary agrees with the database either
    way; this keeps the run free of them."""
    store_readings(device, [{"vibration": 1.0}])


# Committed for real, so that the live server's threads see the rows.
@pytest.mark.django_db(transaction=True)
def test_summary_agrees_with_the_database(live_server, current_chunk):
    out = io.StringIO()
    call_command(
        "simulate",
        "--devices",
        "6",
        "--rate",
        "40",
        "--duration",
        "1.5",
        "--anomalies",
        "0.2",
        "--create",
        "--url",
        live_server.url,
        "--no-progress",
        "--seed",
        "11",
        stdout=out,
    )

    summary = summary_of(out.getvalue())
    devices = Device.objects.filter(serial_number__startswith="SIM-")
    assert devices.count() == 6
    assert {d.device_type.metric_name for d in devices} == {"vibration", "temperature", "pressure"}
    assert summary["sent"] == 60 and summary["rejected"] == 0 and summary["failed"] == 0
    assert Telemetry.objects.filter(device__in=devices).count() == summary["sent"]
    assert Event.objects.filter(rule__device__in=devices).count() == summary["events raised"]
    assert summary["anomalies"] > 0
    assert summary["events raised"] > 0  # each created device watches its range


@pytest.mark.django_db(transaction=True)
def test_every_anomaly_raises_an_event_once_per_cooldown(live_server, current_chunk):
    out = io.StringIO()
    call_command(
        "simulate",
        "--devices",
        "3",
        "--rate",
        "30",
        "--duration",
        "1",
        "--anomalies",
        "1",
        "--create",
        "--url",
        live_server.url,
        "--no-progress",
        stdout=out,
    )

    summary = summary_of(out.getvalue())
    assert summary["anomalies"] == summary["sent"] == 30
    # Pressure anomalies are high or low; the rule watches "above range", so at most one event
    # per device (the 5 minute cooldown), and the vibration and temperature devices raise theirs.
    events = Event.objects.filter(rule__device__serial_number__startswith="SIM-")
    assert summary["events raised"] == events.count()
    assert 2 <= events.count() <= 3
    assert set(events.values_list("severity", flat=True)) == {"critical"}


@pytest.mark.django_db(transaction=True)
def test_a_second_run_reuses_the_devices_with_new_tokens(live_server, current_chunk):
    args = ["--devices", "2", "--rate", "20", "--duration", "0.5", "--url", live_server.url, "--no-progress"]
    call_command("simulate", *args, "--create", stdout=io.StringIO())
    hashes = dict(Device.objects.values_list("serial_number", "token_hash"))

    out = io.StringIO()
    call_command("simulate", *args, stdout=out)

    assert summary_of(out.getvalue())["sent"] == 10
    simulated = Device.objects.filter(serial_number__startswith="SIM-")
    assert simulated.count() == 2
    assert all(hashes[s] != h for s, h in simulated.values_list("serial_number", "token_hash"))
    assert Telemetry.objects.filter(device__in=simulated).count() == 20


@pytest.mark.django_db
def test_missing_devices_without_create_is_an_error_that_says_what_to_do():
    with pytest.raises(CommandError, match="--create"):
        call_command("simulate", "--devices", "2", "--url", "http://127.0.0.1:9", stdout=io.StringIO())


@pytest.mark.django_db(transaction=True)
def test_refused_readings_are_counted_as_rejected_and_nothing_is_stored(live_server):
    import random

    devices = [SimulatedDevice("SIM-VIB-0001", "iot_not-a-real-token", Machine("vibration", random.Random(1), 0.0))]

    summary = Simulation(url=live_server.url, devices=devices, rate=50, duration=0.2).run()

    assert (summary.sent, summary.rejected, summary.failed) == (0, 10, 0)
    assert summary.statuses == {401: 10}
    assert Telemetry.objects.count() == 0


def test_an_unreachable_hub_is_counted_as_failed():
    import random

    devices = [SimulatedDevice("SIM-VIB-0001", "iot_x", Machine("vibration", random.Random(1), 0.0))]

    summary = Simulation(url="http://127.0.0.1:9", devices=devices, rate=20, duration=0.2, timeout=2).run()

    assert (summary.sent, summary.failed) == (0, 4)
    assert summary.errors and "ConnectError" in summary.errors[0]

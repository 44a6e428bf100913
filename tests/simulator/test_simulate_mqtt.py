"""`manage.py simulate --transport mqtt`: the simulated devices publish through the hub's broker,
with the tokens the simulator renewed, and the consumer stores what the broker acknowledged."""

import io
import re

import pytest
from django.core.management import call_command

from iothub.devices.models import Device
from iothub.telemetry.models import Telemetry
from tests.mqtt_broker import Broker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker(tmp_path, settings):
    started = Broker(tmp_path / "broker", settings).start()
    started.consumer().start()
    yield started
    started.stop()


def test_readings_published_over_mqtt_are_stored_as_the_summary_says(broker):
    out = io.StringIO()
    call_command(
        "simulate",
        *("--transport", "mqtt", "--devices", "4", "--rate", "40", "--duration", "1", "--anomalies", "0"),
        *("--create", "--no-progress", "--seed", "3"),
        stdout=out,
    )

    output = out.getvalue()
    assert f"against mqtt://127.0.0.1:{broker.port}" in output
    sent = int(re.search(r"^\s+sent\s+(\d+)$", output, re.M).group(1))
    assert sent == 40 and re.search(r"^\s+failed\s+0$", output, re.M)
    devices = Device.objects.filter(serial_number__startswith="SIM-")
    wait_until(lambda: Telemetry.objects.filter(device__in=devices).count() == sent)
    assert {d.serial_number for d in devices if d.last_seen is not None} == set(
        devices.values_list("serial_number", flat=True)
    )

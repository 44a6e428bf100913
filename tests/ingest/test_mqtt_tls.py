"""MQTT over TLS: the hub's broker configuration with a certificate signed by a CA the test makes
(with the run script's own helper, as `./scripts/run` makes one), devices and the consumer on the
TLS listener, and a client that does not trust the CA turned away."""

import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from iothub.telemetry.models import Telemetry
from tests.mqtt_broker import Broker, DeviceClient, telemetry, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def certificates(tmp_path) -> dict[str, str]:
    made = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "runlib.py"), "mqtt-tls", str(tmp_path / "tls")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, f"no certificate (is openssl installed?): {made.stderr}"
    certfile, keyfile, ca = made.stdout.strip().split("\t")
    return {"certfile": certfile, "keyfile": keyfile, "ca": ca}


@pytest.fixture
def tls_broker(tmp_path, settings, certificates):
    broker = Broker(tmp_path / "broker", settings, certfile=certificates["certfile"], keyfile=certificates["keyfile"])
    broker.start()
    yield broker
    broker.stop()


def test_a_device_publishes_over_tls_to_a_consumer_on_tls(tls_broker, certificates, device_with_token):
    consumer = tls_broker.consumer(
        IOTHUB_MQTT_PORT=str(tls_broker.tls_port), IOTHUB_MQTT_CA_FILE=certificates["ca"]
    ).start()
    device = DeviceClient(
        tls_broker, "VIB-SN-001", device_with_token.token, port=tls_broker.tls_port, ca_certs=certificates["ca"]
    )
    assert device.connect().value == 0

    assert not device.publish(telemetry("VIB-SN-001", vibration=4.2)).is_failure

    row = wait_until(lambda: Telemetry.objects.first())
    assert row.payload["metrics"] == {"vibration": 4.2}
    consumer.stop()
    device.close()


def test_a_client_that_does_not_trust_the_ca_is_turned_away(tls_broker, device_with_token):
    device = DeviceClient(
        tls_broker, "VIB-SN-001", device_with_token.token, port=tls_broker.tls_port, cert_reqs=ssl.CERT_REQUIRED
    )

    with pytest.raises(ssl.SSLCertVerificationError):
        device.connect()


def test_the_plain_listener_is_on_loopback_and_tls_needs_tls_1_2(tls_broker):
    config = tls_broker.files.config.read_text()

    assert f"listener {tls_broker.port} 127.0.0.1\n" in config
    assert f"listener {tls_broker.tls_port} 127.0.0.1\ncertfile " in config
    assert "tls_version tlsv1.2" in config
    assert "allow_anonymous false" in config

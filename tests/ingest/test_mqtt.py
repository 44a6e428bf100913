"""MQTT ingest with the real parts: the hub's Mosquitto configuration in a broker of its own,
`manage.py run_ingest` as a process, devices as MQTT clients, the test database.

What the broker enforces (credentials, topics, a changed credential on an open connection), what
the consumer does with each message (stored, refused on the errors topic, the same words as HTTP),
and what survives a consumer killed at any moment: nothing lost, nothing stored twice."""

import json
import random
import threading
import time
from urllib.parse import urlsplit

import pytest
from django.db.models import Count

from iothub.devices.services import device_create, device_delete, device_revoke_token, device_rotate_token
from iothub.events.models import Event
from iothub.ingest.models import MqttDelivery
from iothub.liveness import heartbeat_age
from iothub.liveness import main as liveness_main
from iothub.notifications.delivery import DeliveryOutbox
from iothub.rules.models import Rule
from iothub.telemetry.models import Telemetry
from tests.mqtt_broker import PUBACK, Broker, DeviceClient, TcpProxy, telemetry, wait_until
from tests.worker.drive import send_due
from tests.worker.process import test_database_url as database_url

pytestmark = pytest.mark.django_db(transaction=True)

NOT_AUTHORIZED = 135


@pytest.fixture
def broker(tmp_path, settings):
    started = Broker(tmp_path / "broker", settings).start()
    yield started
    started.stop()


@pytest.fixture
def consumer(broker):
    process = broker.consumer().start()
    yield process
    process.stop()


@pytest.fixture
def second_device(vibration_type):
    return device_create(device_type=vibration_type, name="Press 4", serial_number="VIB-SN-002")


def connected(broker, created) -> DeviceClient:
    client = DeviceClient(broker, created.device.serial_number, created.token)
    code = client.connect()
    assert not code.is_failure, code
    return client


def stored(device) -> list[Telemetry]:
    return list(Telemetry.objects.filter(device=device).order_by("id"))


def test_a_device_publishes_and_its_row_appears(broker, consumer, device_with_token):
    client = connected(broker, device_with_token)

    code = client.publish(telemetry("VIB-SN-001", vibration=7.5, temperature=41.0))

    assert not code.is_failure, code
    (row,) = wait_until(lambda: stored(device_with_token.device))
    assert row.payload == {
        "version": "0.0.1",
        "serial_number": "VIB-SN-001",
        "metrics": {"vibration": 7.5, "temperature": 41.0},
    }
    device_with_token.device.refresh_from_db()
    assert device_with_token.device.last_seen == row.timestamp
    client.close()


def test_wrong_credentials_are_refused_at_connect(broker, device_with_token, second_device):
    assert DeviceClient(broker, "VIB-SN-001", "iot_not-the-token").connect().value == NOT_AUTHORIZED
    assert DeviceClient(broker, "NO-SUCH-DEVICE", device_with_token.token).connect().value == NOT_AUTHORIZED
    # A device's token is its own: it does not open another device's account.
    assert DeviceClient(broker, "VIB-SN-002", device_with_token.token).connect().value == NOT_AUTHORIZED
    assert DeviceClient(broker, "VIB-SN-001", device_with_token.token).connect().value == 0


def test_a_device_cannot_publish_to_another_devices_topic(broker, consumer, device_with_token, second_device):
    client = connected(broker, device_with_token)

    code = client.publish(telemetry("VIB-SN-002"), topic="devices/VIB-SN-002/telemetry")
    own = client.publish(telemetry("VIB-SN-001"))

    assert code.value == NOT_AUTHORIZED
    assert not own.is_failure
    wait_until(lambda: stored(device_with_token.device))  # the consumer runs, and took the device's own
    assert stored(second_device.device) == []
    client.close()


def test_a_device_receives_only_its_own_errors(broker, consumer, device_with_token, second_device):
    snoop = connected(broker, device_with_token)
    snoop.subscribe("devices/VIB-SN-002/errors")
    snoop.subscribe("devices/+/errors")
    owner = connected(broker, second_device)
    owner.subscribe("devices/VIB-SN-002/errors")

    owner.publish(b"{not json")

    topic, error, _ = owner.next_message()
    assert topic == "devices/VIB-SN-002/errors" and error["status"] == 400
    time.sleep(1)  # anything the broker would have sent the other device has arrived by now
    assert snoop.received.empty()
    snoop.close()
    owner.close()


def test_a_refused_message_is_answered_like_http_and_the_next_one_is_stored(
    broker, consumer, device_with_token, client
):
    device = connected(broker, device_with_token)
    device.subscribe("devices/VIB-SN-001/errors")
    batch = [
        telemetry("VIB-SN-001", vibration=1.0),
        {"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"vibration": "x"}},
    ]

    device.publish(batch, correlation=b"msg-41")
    device.publish(telemetry("VIB-SN-001", vibration=2.0))

    topic, error, message = device.next_message()
    http = client.post(
        "/api/v1/telemetry/",
        data=json.dumps(batch),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {device_with_token.token}",
    )
    assert topic == "devices/VIB-SN-001/errors"
    assert error == {"status": http.status_code, **http.json()}
    assert error["errors"] == [{"field": "metrics.vibration", "message": "must be a number, not a string", "index": 1}]
    assert message.properties.CorrelationData == b"msg-41"
    (row,) = wait_until(lambda: stored(device_with_token.device))  # the batch stored nothing
    assert row.payload["metrics"] == {"vibration": 2.0}
    device.close()


@pytest.mark.parametrize("change", ["rotate", "revoke", "delete"])
def test_a_changed_credential_stops_an_open_connection_at_once(broker, device_with_token, change):
    client = connected(broker, device_with_token)

    if change == "rotate":
        new_token = device_rotate_token(device=device_with_token.device).token
    elif change == "revoke":
        device_revoke_token(device=device_with_token.device)
    else:
        device_delete(device=device_with_token.device)

    assert client.disconnected.wait(5), "the broker kept the connection open"
    assert DeviceClient(broker, "VIB-SN-001", device_with_token.token).connect().value == NOT_AUTHORIZED
    if change == "rotate":
        assert DeviceClient(broker, "VIB-SN-001", new_token).connect().value == 0


def test_a_message_stored_whose_acknowledgement_was_lost_is_stored_once_with_one_event(broker, device_with_token):
    """The consumer is killed between the commit and the PUBACK: the broker delivers the message
    again to the consumer's session, which recognises it and acknowledges it without storing it."""
    Rule.objects.create(device=device_with_token.device, name="High", operator="gt", threshold="20", action_config=[])
    proxy = TcpProxy(broker.port)
    proxy.drop_upstream(PUBACK)  # the consumer's acknowledgements never reach the broker
    first = broker.consumer(IOTHUB_MQTT_PORT=str(proxy.port)).start()
    device = connected(broker, device_with_token)

    device.publish(telemetry("VIB-SN-001", vibration=21.0))
    wait_until(lambda: Event.objects.exists())
    wait_until(lambda: proxy.dropped)
    first.kill()
    proxy.close()
    again = broker.consumer().start()  # the same client id: the same session
    again.wait_for("was stored before its acknowledgement was lost")
    again.stop()
    # Acknowledged this time: the broker holds nothing more for the session.
    third = broker.consumer().start()
    time.sleep(1)
    third.stop()

    assert len(stored(device_with_token.device)) == 1
    assert Event.objects.count() == 1
    assert third.count("was stored before") == 0
    device.close()


def test_a_consumer_killed_at_random_moments_loses_nothing_and_stores_nothing_twice(broker, device_with_token):
    """Six hundred messages, every third one the same constant reading (no timestamp, so the same
    payload each time), while the consumer is SIGKILLed three times and started again."""
    device = connected(broker, device_with_token)
    sent = []

    def publish_all():
        for number in range(600):
            body = telemetry("VIB-SN-001", vibration=5.0) if number % 3 == 0 else telemetry("VIB-SN-001", seq=number)
            code = device.publish(body)
            assert not code.is_failure, code  # acknowledged by the broker: it must be stored
            sent.append(number)
            time.sleep(0.003)

    publisher = threading.Thread(target=publish_all)
    consumer = broker.consumer().start()
    publisher.start()
    for _ in range(3):
        time.sleep(random.uniform(0.2, 0.6))
        consumer.kill()
        consumer = broker.consumer().start()
    publisher.join(60)
    assert len(sent) == 600

    wait_until(lambda: Telemetry.objects.count() >= 600, timeout=30, message="messages were lost")
    time.sleep(1)
    consumer.stop()
    rows = stored(device_with_token.device)
    sequences = [row.payload["metrics"]["seq"] for row in rows if "seq" in row.payload["metrics"]]
    assert sorted(sequences) == [n for n in range(600) if n % 3]
    assert sum("seq" not in row.payload["metrics"] for row in rows) == 200
    device.close()


def test_two_consumers_share_the_messages_and_one_killed_the_other_carries_on(broker, device_with_token):
    device = connected(broker, device_with_token)
    one = broker.consumer("consumer-1").start()
    two = broker.consumer("consumer-2").start()
    for number in range(100):
        device.publish(telemetry("VIB-SN-001", seq=number))
    wait_until(lambda: Telemetry.objects.count() == 100)
    shares = dict(MqttDelivery.objects.values_list("consumer").annotate(n=Count("*")))
    assert shares.keys() == {"consumer-1", "consumer-2"}, shares

    one.kill()
    for number in range(100, 200):
        device.publish(telemetry("VIB-SN-001", seq=number))
    # consumer-2 goes on with its share; consumer-1's waits for it in its session at the broker.
    wait_until(lambda: Telemetry.objects.count() >= 140)
    one = broker.consumer("consumer-1").start()
    wait_until(lambda: Telemetry.objects.count() == 200)
    one.stop()
    two.stop()
    assert sorted(r.payload["metrics"]["seq"] for r in stored(device_with_token.device)) == list(range(200))
    device.close()


def test_a_retired_consumer_stores_what_its_session_held_and_gets_no_more(broker, device_with_token):
    device = connected(broker, device_with_token)
    one = broker.consumer("consumer-1").start()
    two = broker.consumer("consumer-2").start()
    one.kill()
    for number in range(40):
        device.publish(telemetry("VIB-SN-001", seq=number))
    wait_until(lambda: Telemetry.objects.count() >= 10)  # consumer-2's share; consumer-1's waits

    broker.consumer("consumer-1").retire()

    assert Telemetry.objects.count() == 40
    for number in range(40, 60):
        device.publish(telemetry("VIB-SN-001", seq=number))
    wait_until(lambda: Telemetry.objects.count() == 60)  # all of them by consumer-2: none waits
    two.stop()
    assert sorted(r.payload["metrics"]["seq"] for r in stored(device_with_token.device)) == list(range(60))
    device.close()


def test_a_reading_over_the_threshold_raises_its_event_and_the_webhook_arrives(
    broker, consumer, device_with_token, webhook_receiver, template_factory
):
    template = template_factory(
        message_template="{severity}: {rule_name} on {device_name}: {metric} {value} {unit}",
        recipients=[{"type": "webhook", "url": webhook_receiver.url(), "name": "Plant chat"}],
    )
    Rule.objects.create(
        device=device_with_token.device,
        name="Vibration too high",
        operator="gt",
        threshold="25",
        severity="critical",
        action_config=[{"type": "notification", "template_id": template.id}],
    )
    device = connected(broker, device_with_token)

    device.publish(telemetry("VIB-SN-001", vibration=31.5))

    event = wait_until(lambda: Event.objects.first())
    assert send_due(DeliveryOutbox()) == 1  # the worker's production batch
    (webhook,) = webhook_receiver.received
    assert webhook.verified
    assert webhook.payload["data"]["event"]["id"] == event.id
    assert (
        webhook.payload["data"]["notification"]["message"]
        == "critical: Vibration too high on Press 3: vibration 31.5 mm_s"
    )
    device.close()


def test_while_the_database_is_down_messages_wait_unacknowledged_and_are_stored_after(broker, device_with_token):
    """The consumer reaches PostgreSQL through a proxy that the test cuts: the broker holds the
    messages the consumer cannot store, and the consumer stores them once the database is back."""
    url = urlsplit(database_url())
    database = TcpProxy(url.port or 5432)
    credentials = url.netloc.rpartition("@")[0]
    consumer = broker.consumer(DATABASE_URL=url._replace(netloc=f"{credentials}@127.0.0.1:{database.port}").geturl())
    consumer.start()
    device = connected(broker, device_with_token)
    database.cut()

    for number in range(5):
        assert not device.publish(telemetry("VIB-SN-001", seq=number)).is_failure
    time.sleep(2)
    assert Telemetry.objects.count() == 0
    database.restore()

    wait_until(lambda: Telemetry.objects.count() == 5, timeout=20)
    consumer.stop()
    database.close()
    assert sorted(r.payload["metrics"]["seq"] for r in stored(device_with_token.device)) == list(range(5))
    device.close()


def test_a_connected_consumer_beats_its_heartbeat_and_the_liveness_check_says_so(broker, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IOTHUB_HEARTBEAT_DIR", str(tmp_path))
    assert liveness_main(["ingest"]) == 1  # none yet

    process = broker.consumer(IOTHUB_HEARTBEAT_DIR=str(tmp_path)).start()
    try:
        wait_until(lambda: heartbeat_age("ingest") is not None, message="no heartbeat from the consumer")
        assert liveness_main(["ingest", "--max-age", "30"]) == 0
    finally:
        process.stop()
    assert "alive" in capsys.readouterr().out

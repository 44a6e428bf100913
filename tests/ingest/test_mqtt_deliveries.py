"""The MQTT redelivery record in the ingest transaction itself (no broker): which delivery is a
repeat of a message already stored, and which rows are forgotten as the packet ids go round."""

import hashlib

import orjson
import pytest
from django.utils import timezone

from iothub.ingest.models import MqttDelivery
from iothub.ingest.services import (
    MQTT_DELIVERIES_KEPT,
    Accepted,
    IngestRequest,
    MqttMessageId,
    ingest_batch,
    mqtt_forget_bounds,
)
from iothub.telemetry.models import Telemetry

pytestmark = pytest.mark.django_db

CONSTANT = {"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"vibration": 5.0}}


def request(packet_id: int, *, redelivered: bool, body: dict = CONSTANT, consumer: str = "c1") -> IngestRequest:
    payload = orjson.dumps(body)
    return IngestRequest(
        data=body,
        received_at=timezone.now(),
        serial_number=body["serial_number"],
        mqtt=MqttMessageId(consumer, packet_id, hashlib.sha256(payload).hexdigest(), redelivered),
    )


def test_a_redelivery_of_a_stored_message_is_answered_as_stored_and_writes_nothing(device):
    (first,) = ingest_batch([request(7, redelivered=False)])
    (again,) = ingest_batch([request(7, redelivered=True)])

    assert isinstance(first, Accepted) and not first.replayed and len(first.readings) == 1
    assert isinstance(again, Accepted) and again.replayed and again.readings == ()
    assert Telemetry.objects.count() == 1


def test_a_first_delivery_is_stored_even_with_the_payload_last_stored_under_its_packet_id(device):
    """A constant reading without a timestamp, its packet id come round again: a new message."""
    ingest_batch([request(7, redelivered=False)])
    (later,) = ingest_batch([request(7, redelivered=False)])

    assert not later.replayed
    assert Telemetry.objects.count() == 2


def test_a_redelivery_under_a_packet_id_that_held_another_payload_is_stored(device):
    ingest_batch([request(7, redelivered=False)])
    other = {**CONSTANT, "metrics": {"vibration": 6.0}}

    (redelivered,) = ingest_batch([request(7, redelivered=True, body=other)])

    assert not redelivered.replayed
    assert Telemetry.objects.count() == 2
    assert MqttDelivery.objects.get().fingerprint == hashlib.sha256(orjson.dumps(other)).hexdigest()


def test_packet_ids_are_each_consumers_own(device):
    ingest_batch([request(7, redelivered=False, consumer="c1")])
    (other,) = ingest_batch([request(7, redelivered=True, consumer="c2")])

    assert not other.replayed
    assert Telemetry.objects.count() == 2


def test_a_packet_id_twice_in_one_batch_is_stored_once(device):
    outcomes = ingest_batch([request(9, redelivered=False), request(9, redelivered=True)])

    assert [o.replayed for o in outcomes] == [False, True]
    assert Telemetry.objects.count() == 1


def test_rows_far_behind_the_newest_first_delivery_are_forgotten(device):
    kept_edge = 40_000 - MQTT_DELIVERIES_KEPT
    for packet_id in (kept_edge - 1, kept_edge, 39_999, 40_001, 65_535):
        MqttDelivery.objects.create(consumer="c1", packet_id=packet_id, fingerprint="x", redelivered=False)
    MqttDelivery.objects.create(consumer="c2", packet_id=1, fingerprint="x", redelivered=False)

    ingest_batch([request(40_000, redelivered=False)])

    left = set(MqttDelivery.objects.values_list("consumer", "packet_id"))
    assert left == {("c1", kept_edge), ("c1", 39_999), ("c1", 40_000), ("c2", 1)}


def test_forgetting_counts_round_from_65535_to_1():
    # Newest 100: kept are 1..100 and the 29,900 before, 35,635..65,535.
    bounds = mqtt_forget_bounds(100)
    forgotten = {
        p
        for p in range(1, 65_536)
        if bounds["wrap_low"] < p < bounds["wrap_high"] or p < bounds["low"] or p > bounds["high"]
    }
    assert forgotten == set(range(101, 35_635))
    assert len(set(range(1, 65_536)) - forgotten) == MQTT_DELIVERIES_KEPT + 1


def test_a_redelivery_forgets_nothing(device):
    """Only a first delivery says where the broker's numbering is: a redelivery may be far behind."""
    MqttDelivery.objects.create(consumer="c1", packet_id=60_000, fingerprint="x", redelivered=False)

    ingest_batch([request(5, redelivered=True)])

    assert MqttDelivery.objects.filter(packet_id=60_000).exists()

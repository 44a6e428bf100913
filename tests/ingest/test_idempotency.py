"""Idempotency keys in the flow itself: kept for the keeping time, claimed anew after it, expired
by the worker's job; through the Django view, which answers like the door (tests/ingest/test_door.py)."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from iothub.ingest import writer as writer_module
from iothub.ingest.models import IdempotencyKey
from iothub.ingest.services import IngestRequest, idempotency_keys_expire
from iothub.ingest.writer import IngestWriter
from iothub.telemetry.models import Telemetry

URL = "/api/v1/telemetry/"


def send(client, created, key, vibration=5.0):
    body = {"version": "0.0.1", "serial_number": created.device.serial_number, "metrics": {"vibration": vibration}}
    return client.post(
        URL,
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {created.token}",
        HTTP_IDEMPOTENCY_KEY=key,
    )


@pytest.mark.django_db
def test_a_key_answered_within_the_keeping_time_replays_the_first_answer(client, device_with_token):
    first = send(client, device_with_token, "key-1")
    again = send(client, device_with_token, "key-1")

    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again["Idempotent-Replayed"] == "true"
    assert Telemetry.objects.count() == 1


@pytest.mark.django_db
def test_a_quoted_key_is_the_same_key(client, device_with_token):
    send(client, device_with_token, "key-2")
    assert send(client, device_with_token, '"key-2"')["Idempotent-Replayed"] == "true"
    assert Telemetry.objects.count() == 1


@pytest.mark.django_db
def test_a_key_past_its_keeping_time_is_claimed_anew(client, device_with_token, settings):
    send(client, device_with_token, "key-3")
    IdempotencyKey.objects.update(
        created_at=timezone.now() - timedelta(hours=settings.IOTHUB_INGEST_IDEMPOTENCY_HOURS, seconds=1)
    )

    again = send(client, device_with_token, "key-3", vibration=6.0)  # another body: a new request now

    assert again.status_code == 201 and "Idempotent-Replayed" not in again
    assert Telemetry.objects.count() == 2
    assert IdempotencyKey.objects.get().response == again.content.decode()


@pytest.mark.django_db
def test_a_refused_request_keeps_no_key(client, device_with_token):
    body = {"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"vibration": "high"}}
    response = client.post(
        URL, data=json.dumps(body), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {device_with_token.token}", HTTP_IDEMPOTENCY_KEY="key-4",
    )  # fmt: skip
    assert response.status_code == 400
    assert not IdempotencyKey.objects.exists()
    assert send(client, device_with_token, "key-4").status_code == 201


@pytest.mark.django_db
def test_keys_past_their_keeping_time_are_expired(client, device_with_token, settings):
    send(client, device_with_token, "old")
    send(client, device_with_token, "new")
    IdempotencyKey.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(hours=settings.IOTHUB_INGEST_IDEMPOTENCY_HOURS, minutes=1)
    )

    assert idempotency_keys_expire() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]


@pytest.mark.django_db(transaction=True)
def test_the_writer_expires_keys_after_a_batch_once_the_hour_is_up(client, device_with_token, settings, monkeypatch):
    send(client, device_with_token, "old")
    IdempotencyKey.objects.update(
        created_at=timezone.now() - timedelta(hours=settings.IOTHUB_INGEST_IDEMPOTENCY_HOURS, minutes=1)
    )
    monkeypatch.setattr(writer_module, "EXPIRE_KEYS_SECONDS", 0)
    writer = IngestWriter(max_messages=10)
    body = {"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"vibration": 1.0}}
    try:
        writer.submit(IngestRequest(data=body, received_at=timezone.now(), token=device_with_token.token)).result(10)
    finally:
        writer.stop()

    assert not IdempotencyKey.objects.filter(key="old").exists()

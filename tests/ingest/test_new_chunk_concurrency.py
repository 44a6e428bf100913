"""Readings that start a new TimescaleDB chunk, sent by many devices at once, are all stored.

Creating a chunk locks `devices` (for the chunk's foreign key) while the concurrent requests, whose
statement already opened `devices` for its update, wait for that chunk: PostgreSQL breaks the
deadlock by failing one transaction, and ingest tries it again instead of answering 500."""

import json

import pytest
from django.db import connection
from django.test import Client

from iothub.devices.services import device_create
from iothub.telemetry.models import Telemetry
from tests.rules.helpers import run_at_once

DEVICES = 6
REQUESTS = 24
ROUNDS = 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_readings_that_start_a_new_chunk_are_all_stored(vibration_type):
    devices = [
        device_create(device_type=vibration_type, name=f"Press {n}", serial_number=f"VIB-CHUNK-{n}")
        for n in range(DEVICES)
    ]

    def post(i):
        created = devices[i % DEVICES]
        body = {"version": "0.0.1", "serial_number": created.device.serial_number, "metrics": {"vibration": 4.0}}
        return (
            Client()
            .post(
                "/api/v1/telemetry/",
                data=json.dumps(body),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {created.token}",
            )
            .status_code
        )

    for _ in range(ROUNDS):
        # TRUNCATE drops a hypertable's chunks: the next readings must create theirs.
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE telemetry")
        assert run_at_once(post, REQUESTS) == [201] * REQUESTS
        assert Telemetry.objects.count() == REQUESTS

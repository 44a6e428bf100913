"""Device-ordered chunks: a closed chunk rewritten once in (device_id, timestamp) order by the
worker's task, its rows unchanged, while ingest and reads go on."""

import io
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.test import Client
from django.utils import timezone

from iothub.devices.services import device_create
from iothub.telemetry.chunks import REORDERED, chunk_order_counts, chunks_to_reorder, telemetry_reorder_chunks
from iothub.worker.jobs import periodic_jobs
from tests.locks import wait_until_a_transaction_waits_for_ours
from tests.rules.helpers import message, send

OLD = timezone.now() - timedelta(days=60)
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fleet(vibration_type, device_with_token):
    """Four devices whose readings of 60 days ago arrived interleaved (one closed chunk), and one
    reading of now (the open chunk)."""
    others = [
        device_create(device_type=vibration_type, name=f"Press {n}", serial_number=f"VIB-SN-1{n}").device
        for n in range(3)
    ]
    devices = [device_with_token.device, *others]
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO telemetry (device_id, "timestamp", payload)
               SELECT d, %s + g * interval '1 second',
                      jsonb_build_object('metrics', jsonb_build_object('vibration', g %% 25, 'n', g))
               FROM generate_series(1, 1500) g, unnest(%s::uuid[]) d
               ORDER BY 2""",
            [OLD, [d.id for d in devices]],
        )
    send(Client(), device_with_token.token, message(device_with_token.device, vibration=1.0))
    return device_with_token


def chunk_of(at) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format('%%I.%%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'telemetry' AND range_start <= %s AND %s < range_end",
            [at, at],
        )
        return cursor.fetchone()[0]


def rows(chunk: str) -> list[tuple]:
    """The chunk's rows in their physical order (ctid)."""
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT id, device_id, "timestamp", payload::text FROM {chunk} ORDER BY ctid')  # noqa: S608
        return cursor.fetchall()


def pages(chunk: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int", [chunk])
        return cursor.fetchone()[0]


def in_device_order(found: list[tuple]) -> bool:
    keys = [(str(device_id), at) for _, device_id, at, _ in found]
    return keys == sorted(keys)


def test_a_closed_chunk_is_rewritten_in_device_order_once_with_its_rows_unchanged(fleet):
    old, current = chunk_of(OLD), chunk_of(timezone.now())
    before, size = rows(old), pages(old)
    assert not in_device_order(before)  # interleaved, as readings arrive

    assert [c.name for c in chunks_to_reorder()] == [old]  # the open chunk waits
    assert chunk_order_counts() == {"reordered": 0, "waiting": 1, "open": 1}
    assert telemetry_reorder_chunks() == 1

    after = rows(old)
    assert in_device_order(after)
    assert sorted(after) == sorted(before)
    assert pages(old) <= size + 1  # the rewrite's pages given back
    with connection.cursor() as cursor:
        cursor.execute("SELECT obj_description(%s::regclass, 'pg_class')", [old])
        assert cursor.fetchone()[0] == REORDERED
    assert rows(current) and chunk_order_counts() == {"reordered": 1, "waiting": 0, "open": 1}
    assert telemetry_reorder_chunks() == 0  # once


def test_ingest_and_reads_go_on_while_a_chunk_is_reordered(fleet):
    old = chunk_of(OLD)
    before = rows(old)
    device, token = fleet.device, fleet.token
    done = threading.Event()
    errors = []

    def reorder():
        try:
            telemetry_reorder_chunks()
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()
            done.set()

    # A row lock of ours on one of the chunk's rows holds the rewrite in the middle of its DELETE:
    # then it holds every lock it takes, and ingest and reads must still be answered.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {old} WHERE id = %s FOR UPDATE", [before[-1][0]])  # noqa: S608
        worker = threading.Thread(target=reorder)
        worker.start()
        wait_until_a_transaction_waits_for_ours()

        answers = {}

        def meanwhile():
            try:
                client = Client()
                answers["now"] = send(client, token, message(device, vibration=2.0))
                answers["late"] = send(client, token, message(device, at=OLD + timedelta(hours=1), vibration=3.0))
                with connection.cursor() as cursor:
                    cursor.execute(
                        'SELECT count(*) FROM telemetry WHERE device_id = %s AND "timestamp" < %s',
                        [device.id, OLD + timedelta(days=1)],
                    )
                    answers["read"] = cursor.fetchone()[0]
            finally:
                connections.close_all()

        helper = threading.Thread(target=meanwhile)
        helper.start()
        helper.join(timeout=20)
        assert not helper.is_alive(), "ingest or a read waited for the reorder"
        assert not done.is_set()  # the reorder was still under way all along
    worker.join(timeout=60)
    assert not errors and done.is_set()

    assert answers["read"] == 1500 + 1  # the rows as they were while being moved, and the late one
    after = rows(old)
    late_id = answers["late"]["readings"][0]["id"]
    assert sorted(after) == sorted([*before, *[r for r in after if r[0] == late_id]])
    assert in_device_order([r for r in after if r[0] != late_id])
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM telemetry WHERE id = %s", [answers["now"]["readings"][0]["id"]])
        assert cursor.fetchone()[0] == 1


def test_the_worker_runs_it_and_setup_reports_it(fleet):
    (job,) = [job for job in periodic_jobs() if job.name == "telemetry_chunk_reorder"]
    assert job.run() == 1

    out = io.StringIO()
    call_command("setup_timescaledb", stdout=out)
    assert "device-ordered chunks: 1 reordered by (device_id, timestamp), 0 closed and waiting" in out.getvalue()


def test_metrics_count_the_chunks_by_state(fleet):
    telemetry_reorder_chunks()
    body = Client().get("/metrics").content.decode()
    assert 'iothub_telemetry_chunks{state="reordered"} 1.0' in body
    assert 'iothub_telemetry_chunks{state="waiting"} 0.0' in body
    assert 'iothub_telemetry_chunks{state="open"} 1.0' in body


def test_a_chunk_retention_is_about_to_drop_is_left_alone(fleet, settings):
    settings.IOTHUB_TELEMETRY_RETENTION_DAYS = 30  # the chunk of 60 days ago goes at retention's next turn

    assert chunks_to_reorder() == []
    assert telemetry_reorder_chunks() == 0

"""The batched writer: requests waiting together are stored in one transaction, each answered after
that commit, one bad request refused alone, and no request answered as stored unless it is.

The tests hold a device's row locked from a second connection so that the writer's first batch
waits inside its transaction while the next requests queue up behind it: what the writer then does
with those is what a busy hub does with concurrent requests. Rows written by one transaction share
its id (`xmin`), which is how the tests see how many transactions stored them.
"""

import threading
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from iothub.devices.models import Device
from iothub.devices.services import device_create
from iothub.events.models import Event
from iothub.ingest.services import Accepted, Failed, IngestRequest, Refused, UnknownSender
from iothub.ingest.writer import IngestWriter
from iothub.telemetry.models import Telemetry
from tests.rules.helpers import make_rule
from tests.worker.process import test_database_url as database_url

pytestmark = pytest.mark.django_db(transaction=True)


def request_for(created, *, vibration=5.0, token=None, **extra) -> IngestRequest:
    body = {"version": "0.0.1", "serial_number": created.device.serial_number, "metrics": {"vibration": vibration}}
    return IngestRequest(data=body, received_at=timezone.now(), token=token or created.token, **extra)


def transactions_of(ids) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT xmin::text::bigint FROM telemetry WHERE id = ANY(%s)", [list(ids)])
        return {row[0] for row in cursor.fetchall()}


def stored_ids(outcome) -> list[int]:
    assert isinstance(outcome, Accepted), outcome
    return [r.id for r in outcome.readings]


class DeviceRowHeld:
    """Holds a device's row (FOR UPDATE) from a connection of its own until released, so that a
    batch writing that device waits in its transaction."""

    def __init__(self, device):
        self.conn = psycopg.connect(database_url())
        self.conn.execute("SELECT 1 FROM devices WHERE id = %s FOR UPDATE", [device.id])

    def release(self):
        self.conn.commit()
        self.conn.close()


def wait_until(predicate, timeout=10.0):
    deadline = timezone.now() + timedelta(seconds=timeout)
    while not predicate():
        assert timezone.now() < deadline, "timed out"
        threading.Event().wait(0.02)


def blocked_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.fixture
def devices(vibration_type):
    return [device_create(device_type=vibration_type, name=f"Press {n}", serial_number=f"VIB-W-{n}") for n in range(8)]


@pytest.fixture
def writer():
    writer = IngestWriter(max_messages=5000)
    yield writer
    writer.stop()


def test_requests_that_wait_together_are_stored_in_one_transaction(devices, writer):
    held = DeviceRowHeld(devices[0].device)
    first = writer.submit(request_for(devices[0]))
    wait_until(blocked_on_a_lock)
    queued = [writer.submit(request_for(created)) for created in devices[1:] for _ in range(5)]
    assert not first.done() and not any(f.done() for f in queued)  # nothing answered before a commit

    held.release()

    queued_ids = [i for f in queued for i in stored_ids(f.result(timeout=10))]
    assert len(queued_ids) == 35
    assert len(transactions_of(queued_ids)) == 1
    assert transactions_of(stored_ids(first.result(timeout=10))).isdisjoint(transactions_of(queued_ids))
    assert Telemetry.objects.count() == 36
    assert writer.batches == 2


def test_a_bad_request_among_them_is_refused_alone(devices, writer):
    held = DeviceRowHeld(devices[0].device)
    writer.submit(request_for(devices[0]))
    wait_until(blocked_on_a_lock)
    good = [writer.submit(request_for(created)) for created in devices[1:4]]
    bad_message = writer.submit(request_for(devices[4], vibration="high"))
    unknown = writer.submit(request_for(devices[5], token="iot_not-a-token"))
    more_good = [writer.submit(request_for(created)) for created in devices[6:]]
    held.release()

    refused = bad_message.result(timeout=10)
    assert isinstance(refused, Refused) and refused.rejection.status == 400
    assert refused.rejection.errors[0].field == "metrics.vibration"
    assert isinstance(unknown.result(timeout=10), UnknownSender)
    ids = [i for f in good + more_good for i in stored_ids(f.result(timeout=10))]
    assert len(transactions_of(ids)) == 1
    assert not Telemetry.objects.filter(device=devices[4].device).exists()
    assert not Telemetry.objects.filter(device=devices[5].device).exists()


def telemetry_trigger(name: str, *, refuse_when: str, error: str, errcode: str, create: str):
    """A trigger on telemetry that raises `error` for the rows matching `refuse_when`: a refusal
    by the database itself, tied to one request's rows, as a constraint's would be."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF {refuse_when} THEN
                    RAISE EXCEPTION '{error}' USING ERRCODE = '{errcode}';
                END IF;
                RETURN NEW;
            END $$;
            {create} EXECUTE FUNCTION {name}();
            """
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER {name} ON telemetry; DROP FUNCTION {name}()")


@pytest.fixture
def poison_trigger():
    """Any reading with the metric `poison` is refused by its INSERT."""
    yield from telemetry_trigger(
        "refuse_poison",
        refuse_when="NEW.payload -> 'metrics' ? 'poison'",
        error="poisoned reading",
        errcode="check_violation",
        create="CREATE TRIGGER refuse_poison BEFORE INSERT ON telemetry FOR EACH ROW",
    )


@pytest.mark.usefixtures("poison_trigger")
def test_a_request_the_database_refuses_fails_alone_and_its_neighbours_are_stored(devices, writer):
    held = DeviceRowHeld(devices[0].device)
    writer.submit(request_for(devices[0]))
    wait_until(blocked_on_a_lock)
    good = [writer.submit(request_for(created)) for created in devices[1:7]]
    poisoned_body = {"version": "0.0.1", "serial_number": "VIB-W-7", "metrics": {"vibration": 1.0, "poison": 1}}
    poisoned = writer.submit(IngestRequest(data=poisoned_body, received_at=timezone.now(), token=devices[7].token))
    held.release()

    failed = poisoned.result(timeout=10)
    assert isinstance(failed, Failed) and "poisoned reading" in failed.error
    for future in good:
        assert isinstance(future.result(timeout=10), Accepted)
    assert Telemetry.objects.filter(device__in=[c.device for c in devices[1:7]]).count() == 6
    assert not Telemetry.objects.filter(device=devices[7].device).exists()


@pytest.fixture
def refuse_at_commit():
    """Every reading of the device `VIB-W-3` is refused at COMMIT (a deferred constraint trigger)."""
    yield from telemetry_trigger(
        "refuse_at_commit",
        refuse_when="NEW.payload ->> 'serial_number' = 'VIB-W-3'",
        error="refused at commit",
        errcode="integrity_constraint_violation",
        create="CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON telemetry "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW",
    )


@pytest.mark.usefixtures("refuse_at_commit")
def test_a_commit_that_fails_answers_nothing_as_stored(devices, writer):
    held = DeviceRowHeld(devices[0].device)
    writer.submit(request_for(devices[0]))
    wait_until(blocked_on_a_lock)
    failing = writer.submit(request_for(devices[3]))
    others = [writer.submit(request_for(created)) for created in devices[4:]]
    held.release()

    failed = failing.result(timeout=10)
    assert isinstance(failed, Failed) and "refused at commit" in failed.error
    assert not Telemetry.objects.filter(device=devices[3].device).exists()
    for future in others:  # stored, each after the one that failed was taken out of their batch
        assert Telemetry.objects.filter(id__in=stored_ids(future.result(timeout=10))).count() == 1


def test_a_connection_lost_before_the_commit_is_replaced_and_the_batch_stored_once(devices, writer):
    held = DeviceRowHeld(devices[0].device)
    first = writer.submit(request_for(devices[0]))
    wait_until(blocked_on_a_lock)
    with connection.cursor() as cursor:  # the writer's connection, as a database restart would
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    held.release()

    (reading_id,) = stored_ids(first.result(timeout=10))
    assert list(Telemetry.objects.values_list("id", flat=True)) == [reading_id]


def test_events_go_to_the_request_whose_reading_raised_them_and_one_per_cooldown(devices, writer):
    device = devices[1].device
    make_rule(device, cooldown_minutes=15)
    held = DeviceRowHeld(devices[0].device)
    writer.submit(request_for(devices[0]))
    wait_until(blocked_on_a_lock)
    under = writer.submit(request_for(devices[1], vibration=3.0))
    over = [writer.submit(request_for(devices[1], vibration=16.0 + n)) for n in range(5)]
    held.release()

    assert isinstance(under.result(timeout=10), Accepted) and under.result().events == ()
    raised = [e for f in over for e in f.result(timeout=10).events]
    assert len(raised) == 1
    assert list(Event.objects.values_list("id", flat=True)) == [raised[0].id]
    device_row = Device.objects.get(pk=device.pk)
    assert device_row.latest_metrics["vibration"]["value"] in {16.0 + n for n in range(5)}

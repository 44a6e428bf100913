"""Delivery by real `manage.py run_worker` processes: four of them sharing 2,000 deliveries, one
killed with SIGKILL mid-run, one killed in the middle of a batch, and a SIGTERM that lets the
sends in flight finish."""

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection, transaction

from iothub.events.models import Event
from iothub.notifications.delivery import idempotency_key
from iothub.notifications.models import NotificationDelivery
from tests.notifications.conftest import WEBHOOK_SECRET

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


def _database_url() -> str:
    db = connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgresql://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


COMMAND = [sys.executable, str(ROOT / "manage.py"), "run_worker"]


class Workers:
    """Worker processes on the test database, started and waited for until they listen."""

    def __init__(self, count: int, *, concurrency: int = 4):
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "iothub.settings",
            "DATABASE_URL": _database_url(),
            "SECRET_KEY": "tests-only-key-not-a-secret",
            "IOTHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "IOTHUB_WEBHOOK_ALLOW_PRIVATE": "true",
            "IOTHUB_NOTIFICATION_CONCURRENCY": str(concurrency),
            "LOG_LEVEL": "INFO",
        }
        self.processes = [
            subprocess.Popen(COMMAND, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(count)
        ]
        self.output: dict[int, list[str]] = {p.pid: [] for p in self.processes}
        ready = [threading.Event() for _ in self.processes]
        for process, event in zip(self.processes, ready, strict=True):
            threading.Thread(target=self._read, args=(process, event), daemon=True).start()
        for process, event in zip(self.processes, ready, strict=True):
            assert event.wait(30), f"worker {process.pid} did not start: {self.output[process.pid]}"

    def _read(self, process: subprocess.Popen, ready: threading.Event) -> None:
        for line in process.stdout:
            self.output[process.pid].append(line)
            if "worker started" in line:
                ready.set()

    def stop(self, *, timeout: float = 30) -> list[int]:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        return [process.wait(timeout=timeout) for process in self.processes]

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def start_workers():
    """Starts worker processes; whatever a test leaves running is killed when it ends, so no worker
    outlives its test to claim another test's rows."""
    started: list[Workers] = []

    def start(count: int, **kwargs) -> Workers:
        workers = Workers(count, **kwargs)
        started.append(workers)
        return workers

    yield start
    for workers in started:
        workers.kill()


def _wait_until(predicate, *, timeout: float, what: str, workers: Workers | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    logs = "".join(line for lines in (workers.output.values() if workers else []) for line in lines)
    raise AssertionError(f"timed out waiting for {what}; the workers' logs:\n{logs}")


def _enqueue(template_factory, event_factory, receiver, *, events: int, per_event: int = 50) -> None:
    template = template_factory(
        recipients=[{"type": "webhook", "url": receiver.url(f"/r{n}")} for n in range(per_event)]
    )
    with transaction.atomic():  # one commit, one NOTIFY: the workers wake together
        for _ in range(events):
            event_factory(template)


def _received_by_delivery(receiver) -> dict[int, list[str]]:
    """Per delivery id (from the signed body), the webhook-ids of every request that carried it."""
    seen: dict[int, list[str]] = collections.defaultdict(list)
    for request in receiver.received:
        assert request.verified, request.error
        seen[request.payload["data"]["notification"]["delivery_id"]].append(request.headers["webhook-id"])
    return seen


def test_four_workers_send_2000_deliveries_each_exactly_once(
    start_workers, webhook_receiver, template_factory, event_factory
):
    workers = start_workers(4)
    _enqueue(template_factory, event_factory, webhook_receiver, events=40)
    _wait_until(
        lambda: NotificationDelivery.objects.filter(status="sent").count() == 2000,
        timeout=180,
        what="2000 sent",
        workers=workers,
    )
    assert workers.stop() == [0, 0, 0, 0]
    seen = _received_by_delivery(webhook_receiver)
    assert len(seen) == 2000
    assert all(len(ids) == 1 for ids in seen.values()), "a delivery was sent twice without a crash"
    assert NotificationDelivery.objects.filter(status="sent", attempt_count=1).count() == 2000


def test_a_worker_killed_mid_run_loses_nothing_and_repeats_carry_the_same_webhook_id(
    start_workers, webhook_receiver, template_factory, event_factory
):
    webhook_receiver.delay = 0.005  # keeps sends in flight when the kill lands
    workers = start_workers(4)
    victim = workers.processes[0]
    _enqueue(template_factory, event_factory, webhook_receiver, events=40)
    _wait_until(lambda: len(webhook_receiver.received) >= 400, timeout=120, what="400 arrivals", workers=workers)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    _wait_until(
        lambda: NotificationDelivery.objects.filter(status="sent").count() == 2000, timeout=180, what="2000 sent"
    )
    workers.stop()
    assert victim.returncode == -signal.SIGKILL

    seen = _received_by_delivery(webhook_receiver)
    assert len(seen) == 2000, "a delivery was lost"
    deliveries = {d.id: d for d in NotificationDelivery.objects.all()}
    for delivery_id, webhook_ids in seen.items():
        assert set(webhook_ids) == {idempotency_key(deliveries[delivery_id])}
    repeated = [delivery_id for delivery_id, ids in seen.items() if len(ids) > 1]
    # Only what the killed worker had claimed and not yet recorded can have gone out twice: its
    # open batches, two lanes of four with concurrency 4 (one lane more than the 4 slots fill).
    assert len(repeated) <= 8, repeated


def test_sigterm_lets_the_sends_in_flight_finish_and_claims_no_more(
    start_workers, webhook_receiver, template_factory, event_factory
):
    webhook_receiver.delay = 3.0  # each send stays in flight for three seconds
    workers = start_workers(1, concurrency=2)
    _enqueue(template_factory, event_factory, webhook_receiver, events=1, per_event=6)
    _wait_until(lambda: webhook_receiver.arrived >= 1, timeout=20, what="a send in flight", workers=workers)
    time.sleep(0.3)  # the second slot's send
    in_flight = webhook_receiver.arrived
    started = time.monotonic()
    assert workers.stop() == [0]
    assert time.monotonic() - started >= 1.5, "the worker exited without waiting for its sends"

    # What was in flight finished and was recorded; nothing was claimed after the signal.
    assert 1 <= in_flight <= 2
    assert len(webhook_receiver.received) == in_flight
    assert NotificationDelivery.objects.filter(status="sent", attempt_count=1).count() == in_flight
    assert NotificationDelivery.objects.filter(status="pending", attempt_count=0).count() == 6 - in_flight


def test_a_worker_killed_in_the_middle_of_a_batch_loses_none_of_it(
    start_workers, webhook_receiver, template_factory, event_factory
):
    # One worker, one batch of 8 in flight (concurrency 8: one lane of 8), each send held for 2 s
    # by the receiver: the kill lands after every send of the batch has gone out and before any
    # outcome is recorded.
    webhook_receiver.delay = 2.0
    workers = start_workers(1, concurrency=8)
    _enqueue(template_factory, event_factory, webhook_receiver, events=1, per_event=8)
    _wait_until(lambda: webhook_receiver.arrived == 8, timeout=30, what="the batch in flight", workers=workers)
    victim = workers.processes[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)

    # Nothing of the batch was recorded, nor lost: its transaction rolled back with the connection,
    # so every row is pending again, due at once, its attempt uncounted.
    assert NotificationDelivery.objects.filter(status="pending", attempt_count=0).count() == 8
    webhook_receiver.delay = 0
    start_workers(1, concurrency=8)
    _wait_until(lambda: NotificationDelivery.objects.filter(status="sent").count() == 8, timeout=60, what="8 sent")
    # The receiver notes the first batch's requests when their 2 s are over, answering no one.
    _wait_until(lambda: len(webhook_receiver.received) == 16, timeout=10, what="both rounds noted")

    # Every delivery was sent again by the next worker, with the same webhook-id as the first time.
    seen = _received_by_delivery(webhook_receiver)
    deliveries = {d.id: d for d in NotificationDelivery.objects.all()}
    assert set(seen) == set(deliveries)
    assert all(ids == [idempotency_key(deliveries[d])] * 2 for d, ids in seen.items()), seen
    assert NotificationDelivery.objects.filter(status="sent", attempt_count=1).count() == 8
    entry = Event.objects.get().execution_results[0]
    assert (entry["status"], entry["sent_count"], entry["failed_count"]) == ("completed", 8, 0)

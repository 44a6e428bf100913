"""`manage.py run_worker` as real processes: woken by NOTIFY, sharing a queue without calling any
action twice, finishing the call in flight on SIGTERM, and leaving a killed worker's action to be
retried."""

import json
import signal
import time
from collections import Counter

import pytest
from django.db import connection, transaction
from django.test import Client

from iothub.events.models import Event
from iothub.machines.models import MachineCommand
from iothub.machines.services import MACHINE_COMMANDS_CHANNEL
from tests.rules.helpers import INGEST_URL, make_rule, message
from tests.worker.process import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def start_worker(machine_api):
    started: list[WorkerProcess] = []

    def start(**env) -> WorkerProcess:
        worker = WorkerProcess(machine_api_url=machine_api.url, **env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def enqueue(device, count: int) -> list[MachineCommand]:
    """`count` pending stop_machine commands, committed at once with one NOTIFY, as ingest does."""
    rule = make_rule(device)
    with transaction.atomic():
        commands = []
        for i in range(count):
            event = Event.objects.create(
                rule=rule,
                severity="warning",
                message=f"event {i}",
                execution_results=[{"type": "stop_machine", "machine_id": f"M-{i}", "status": "pending"}],
            )
            commands.append(MachineCommand.objects.create(event=event, action_index=0, machine_id=f"M-{i}"))
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [MACHINE_COMMANDS_CHANNEL])
    return commands


def wait_until_finished(count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while MachineCommand.objects.exclude(status="pending").count() < count:
        assert time.monotonic() < deadline, list(MachineCommand.objects.values_list("machine_id", "status"))
        time.sleep(0.05)


def test_a_committed_event_wakes_the_idle_worker_at_once(start_worker, machine_api, device_with_token):
    device = device_with_token.device
    make_rule(device, action_config=[{"type": "stop_machine", "machine_id": "M-123"}])
    start_worker()
    time.sleep(0.5)  # idle: asleep on LISTEN, next scheduled look a minute away

    sent_at = time.monotonic()
    response = Client().post(
        INGEST_URL,
        data=json.dumps(message(device, vibration=16.2)),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {device_with_token.token}",
    )
    assert response.status_code == 201

    assert machine_api.received.wait(timeout=10)
    # Far below the 60 s the worker would otherwise sleep: it was woken, not polling.
    assert machine_api.calls[0].received_at - sent_at < 2.0
    wait_until_finished(1)
    event = Event.objects.get()
    assert event.execution_results[0]["status"] == "completed"


def test_two_workers_share_many_actions_and_call_each_once(start_worker, machine_api, device):
    machine_api.delay = 0.03
    first, second = start_worker(), start_worker()

    commands = enqueue(device, 40)
    wait_until_finished(len(commands))

    assert Counter(machine_api.paths()) == Counter(f"/machines/M-{i}/stop" for i in range(40))
    assert set(MachineCommand.objects.values_list("status", "attempt_count")) == {("completed", 1)}
    assert all(e["status"] == "completed" for ev in Event.objects.all() for e in ev.execution_results)
    # Both took part: the queue was shared, not drained by one.
    assert first.count("stopped machine") > 0 and second.count("stopped machine") > 0
    assert first.count("stopped machine") + second.count("stopped machine") == 40


def test_sigterm_finishes_the_call_in_flight_then_exits(start_worker, machine_api, device):
    machine_api.delay = 2
    worker = start_worker()
    (command,) = enqueue(device, 1)
    assert machine_api.received.wait(timeout=10)

    worker.signal(signal.SIGTERM)

    assert worker.wait(timeout=15) == 0, worker.log()
    command.refresh_from_db()
    assert (command.status, command.attempt_count) == ("completed", 1)
    assert len(machine_api.calls) == 1
    assert "SIGTERM received" in worker.log() and "worker stopped" in worker.log()


def test_sigterm_stops_an_idle_worker_promptly(start_worker):
    worker = start_worker()

    started = time.monotonic()
    worker.signal(signal.SIGTERM)

    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - started < 3


def test_a_worker_killed_mid_call_leaves_the_action_to_another(start_worker, machine_api, device):
    machine_api.delay = 5
    doomed = start_worker()
    (command,) = enqueue(device, 1)
    assert machine_api.received.wait(timeout=10)

    doomed.signal(signal.SIGKILL)
    doomed.wait()
    machine_api.delay = 0
    start_worker()
    wait_until_finished(1)

    command.refresh_from_db()
    # The killed attempt rolled back with its connection: one attempt on record, the same key twice.
    assert (command.status, command.attempt_count) == ("completed", 1)
    assert [c.headers["idempotency-key"] for c in machine_api.calls] == [str(command.event_id)] * 2

"""The worker's loop: its outboxes and periodic tasks, a periodic task at start-up and then every
interval, a failing one retried while the worker goes on, an idle worker woken by NOTIFY."""

import itertools
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from iothub.devices.models import Device
from iothub.machines.outbox import MachineCommandOutbox
from iothub.notifications.delivery import DeliveryOutbox
from iothub.worker import loop
from iothub.worker.jobs import PeriodicJob, periodic_jobs, worker_outboxes
from iothub.worker.loop import Worker
from tests.worker.drive import running_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_hubs_outboxes_and_periodic_tasks(settings):
    outboxes = worker_outboxes()
    assert [type(outbox) for outbox in outboxes] == [MachineCommandOutbox, DeliveryOutbox]
    assert outboxes[0].queue.channel == "iothub_machine_commands"
    jobs = {job.name: job for job in periodic_jobs()}
    assert jobs["device_inactivity"].every == timedelta(seconds=settings.IOTHUB_WORKER_INACTIVITY_CHECK_SECONDS)
    assert jobs["telemetry_retention"].every == timedelta(seconds=settings.IOTHUB_WORKER_RETENTION_CHECK_SECONDS)
    assert jobs["telemetry_chunk_reorder"].every == timedelta(seconds=settings.IOTHUB_WORKER_REORDER_CHECK_SECONDS)
    assert jobs["telemetry_rollups"].every == timedelta(seconds=settings.IOTHUB_WORKER_ROLLUP_SECONDS)


def test_a_periodic_task_runs_at_start_then_every_interval():
    runs: list[float] = []
    job = PeriodicJob("tick", every=timedelta(seconds=0.5), task=lambda: runs.append(time.monotonic()) or 1)

    with running_worker([], periodic=[job]):
        wait_until(lambda: len(runs) >= 3, what="three runs")

    assert all(0.45 <= later - earlier < 1.5 for earlier, later in itertools.pairwise(runs)), runs


def test_a_failing_periodic_task_is_retried_while_the_worker_goes_on(monkeypatch, caplog):
    monkeypatch.setattr(loop, "ERROR_PAUSE", 0.2)
    calls = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("broken task")
        return 0

    job = PeriodicJob("flaky", every=timedelta(hours=1), task=flaky)
    with running_worker([], periodic=[job]):
        wait_until(lambda: len(calls) >= 2, what="a second run after the failure")

    assert "periodic task flaky failed" in caplog.text


def test_the_device_inactivity_task_marks_silent_devices(device):
    Device.objects.filter(pk=device.pk).update(last_seen=timezone.now() - timedelta(hours=1), status="active")
    job = {job.name: job for job in periodic_jobs()}["device_inactivity"]

    assert job.run() == 1
    device.refresh_from_db()
    assert device.status == "inactive"


def test_a_stopped_worker_with_nothing_to_do_exits_at_once():
    started = time.monotonic()
    with running_worker([MachineCommandOutbox(), DeliveryOutbox()]) as worker:
        wait_until(lambda: worker.runners, what="the start")
    assert time.monotonic() - started < 5


def test_a_worker_asked_to_stop_before_it_listens_exits_at_once():
    worker = Worker(outboxes=[MachineCommandOutbox(), DeliveryOutbox()], periodic=[])
    worker.stop()  # e.g. SIGTERM while it starts
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()

    thread.join(timeout=10)
    assert not thread.is_alive(), "the worker waited for a LISTEN it would never make"

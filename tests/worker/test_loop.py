"""The worker's loop with stand-in jobs: turns, rounds while there is work, sleeping until the
earliest due time, a failing job rested while the others go on, and stopping."""

import threading
import time
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from iothub.devices.models import Device
from iothub.worker import loop
from iothub.worker.jobs import PeriodicJob, QueueJob, worker_jobs
from iothub.worker.loop import Worker


class FakeQueue:
    def __init__(self, items: int, *, fail: bool = False):
        self.items = items
        self.fail = fail
        self.turns = 0

    def run_next(self) -> int:
        self.turns += 1
        if self.fail:
            raise RuntimeError("broken job")
        if self.items:
            self.items -= 1
            return 1
        return 0

    def next_due(self) -> datetime | None:
        return timezone.now() if self.items else None


def queue_job(name: str, fake: FakeQueue) -> QueueJob:
    return QueueJob(name, None, fake.run_next, fake.next_due)


def run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(loop, "STOP_CHECK", 0.05)
    monkeypatch.setattr(loop, "ERROR_PAUSE", 0.3)


def test_a_round_gives_each_job_a_turn_and_rounds_go_on_while_there_is_work(db):
    a, b = FakeQueue(3), FakeQueue(1)
    worker = Worker([queue_job("a", a), queue_job("b", b)])

    assert worker.run_round() == 2
    assert worker.run_round() == 1
    assert worker.run_round() == 1
    assert worker.run_round() == 0
    assert (a.turns, b.turns) == (4, 4)


def test_the_loop_drains_the_jobs_then_sleeps_until_stopped(db):
    a = FakeQueue(50)
    worker = Worker([queue_job("a", a)])
    thread = run_in_thread(worker)

    deadline = time.monotonic() + 5
    while a.items and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.items == 0
    worker.stop()
    thread.join(timeout=2)
    assert not thread.is_alive()


def test_a_failing_job_is_rested_while_the_others_go_on(db, caplog):
    broken, healthy = FakeQueue(0, fail=True), FakeQueue(5)
    worker = Worker([queue_job("broken", broken), queue_job("healthy", healthy)])

    assert worker.run_round() == 1
    assert worker.run_round() == 1  # the broken job is resting: not called
    assert broken.turns == 1 and healthy.turns == 2
    assert "job broken failed" in caplog.text
    time.sleep(0.35)
    worker.run_round()
    assert broken.turns == 2


def test_sleep_is_until_the_earliest_due_time(db):
    soon = QueueJob("soon", None, lambda: 0, lambda: timezone.now() + timedelta(seconds=2))
    later = QueueJob("later", None, lambda: 0, lambda: timezone.now() + timedelta(seconds=30))
    idle = QueueJob("idle", None, lambda: 0, lambda: None)
    worker = Worker([later, idle, soon])

    assert 1.5 < worker._seconds_until_due() <= 2.1
    assert Worker([idle])._seconds_until_due() == loop.IDLE_WAIT


def test_a_job_due_now_that_did_nothing_does_not_make_the_worker_spin(db):
    # E.g. the only due row is held by another worker in the middle of its call.
    held = QueueJob("held", None, lambda: 0, lambda: timezone.now() - timedelta(seconds=30))

    assert Worker([held])._seconds_until_due() == loop.MIN_WAIT


def test_a_periodic_job_runs_at_start_then_every_interval(db):
    runs = []
    job = PeriodicJob("tick", every=timedelta(seconds=60), task=lambda: runs.append(1) or 7)

    assert job.next_due() <= timezone.now()
    assert job.run_once() == 7
    assert job.run_once() == 0
    assert runs == [1]
    assert timedelta(seconds=59) < job.next_due() - timezone.now() <= timedelta(seconds=60)


def test_the_hubs_jobs_include_stop_machine_and_the_periodic_tasks(settings):
    jobs = {job.name: job for job in worker_jobs()}

    assert jobs["machine_commands"].channel == "iothub_machine_commands"
    assert jobs["device_inactivity"].every == timedelta(seconds=settings.IOTHUB_WORKER_INACTIVITY_CHECK_SECONDS)
    assert jobs["telemetry_retention"].every == timedelta(seconds=settings.IOTHUB_WORKER_RETENTION_CHECK_SECONDS)


def test_the_device_inactivity_job_marks_silent_devices(db, device):
    Device.objects.filter(pk=device.pk).update(last_seen=timezone.now() - timedelta(hours=1), status="active")
    job = {job.name: job for job in worker_jobs()}["device_inactivity"]

    assert job.run_once() == 1
    device.refresh_from_db()
    assert device.status == "inactive"

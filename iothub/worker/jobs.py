"""What the worker does: its jobs, and the contract a job keeps.

A job is anything with

- `name`: for the log;
- `channel`: a PostgreSQL NOTIFY channel whose notifications mean "work may be due now", or None;
- `run_once() -> int`: do a small, bounded amount of due work (one item is right for a queue) in
  its own transaction(s), and return how many items it handled; 0 means nothing was due. The
  worker calls it again at once while it returns more than 0, giving every job a turn in between,
  and checks for shutdown between calls, so a call must not take long beyond its own I/O;
- `next_due() -> datetime | None`: when the job next has something due (a time in the past: now),
  or None when it has nothing pending; the worker sleeps until the earliest of these or a NOTIFY
  (at least a second after a round that did nothing: an item due but held by another worker must
  not make this one spin).

Queue jobs (`QueueJob`) claim rows with `SELECT … FOR UPDATE SKIP LOCKED`, so several workers share
a queue; periodic jobs (`PeriodicJob`) run a task every so often, one worker at a time.

Adding a queue is one line in `worker_jobs()`, e.g. the machine commands:

    QueueJob("machine_commands", MACHINE_COMMANDS_CHANNEL, machine_command_run_next, machine_command_next_due),

The notification deliveries are a job of their own (`DeliveryJob`), which keeps several sends in
flight on threads.
"""

import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from iothub.devices.services import devices_mark_inactive
from iothub.ingest.services import idempotency_keys_expire
from iothub.machines.services import MACHINE_COMMANDS_CHANNEL, machine_command_next_due, machine_command_run_next
from iothub.notifications.delivery import DeliveryJob
from iothub.telemetry.timescale import telemetry_apply_retention

logger = logging.getLogger(__name__)


class Job(Protocol):
    name: str
    channel: str | None

    def run_once(self) -> int: ...

    def next_due(self) -> datetime | None: ...


@dataclass
class QueueJob:
    """A queue of rows in PostgreSQL, drained one item per call."""

    name: str
    channel: str | None
    run_next: Callable[[], int]
    next_due_at: Callable[[], datetime | None]

    def run_once(self) -> int:
        return self.run_next()

    def next_due(self) -> datetime | None:
        return self.next_due_at()


@dataclass
class PeriodicJob:
    """A task run every `every`, first at start-up. Workers on other hosts may run it too; a
    transaction-scoped advisory lock lets one of them at a time do it, and the others skip."""

    name: str
    every: timedelta
    task: Callable[[], int]
    channel: str | None = None
    _last_run: float | None = field(default=None, init=False)  # monotonic time
    _last_run_at: datetime | None = field(default=None, init=False)

    def run_once(self) -> int:
        if self._last_run is not None and time.monotonic() - self._last_run < self.every.total_seconds():
            return 0
        self._last_run, self._last_run_at = time.monotonic(), timezone.now()
        lock_key = zlib.crc32(f"iothub.worker.{self.name}".encode())
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [lock_key])
                if not cursor.fetchone()[0]:
                    logger.info("%s: another worker is running it; skipped", self.name)
                    return 0
            done = self.task()
        logger.info("%s: %d", self.name, done)
        return done

    def next_due(self) -> datetime | None:
        if self._last_run_at is None:
            return timezone.now()
        return self._last_run_at + self.every


def _devices_mark_inactive() -> int:
    return devices_mark_inactive(silent_for=timedelta(seconds=settings.IOTHUB_INACTIVE_AFTER_SECONDS))


def worker_jobs() -> list[Job]:
    """The hub's jobs, in the order each round gives them a turn."""
    return [
        QueueJob("machine_commands", MACHINE_COMMANDS_CHANNEL, machine_command_run_next, machine_command_next_due),
        DeliveryJob(),
        PeriodicJob(
            "device_inactivity",
            every=timedelta(seconds=settings.IOTHUB_WORKER_INACTIVITY_CHECK_SECONDS),
            task=_devices_mark_inactive,
        ),
        PeriodicJob(
            "telemetry_retention",
            every=timedelta(seconds=settings.IOTHUB_WORKER_RETENTION_CHECK_SECONDS),
            task=telemetry_apply_retention,
        ),
        PeriodicJob(
            "idempotency_keys_expiry",
            every=timedelta(seconds=settings.IOTHUB_WORKER_RETENTION_CHECK_SECONDS),
            task=idempotency_keys_expire,
        ),
    ]

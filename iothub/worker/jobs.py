"""What the worker does: the outboxes its engine runs, and its periodic tasks.

Outboxes (`iothub.outbox`) are queues of rows that events leave for the worker; the engine
(`engine.py`) claims them in batches and sends them. Adding one is a line in `worker_outboxes()`
and an outbox class beside the table it runs (docs/worker.md, "A new outbox").

Periodic tasks run every so often, one worker at a time (`PeriodicJob`).
"""

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction

from iothub.devices.services import devices_mark_inactive
from iothub.events.services import nodata_rules_evaluate
from iothub.machines.outbox import MachineCommandOutbox
from iothub.notifications.delivery import DeliveryOutbox
from iothub.notifications.services import event_follow_ups_send
from iothub.outbox import Outbox
from iothub.telemetry.chunks import telemetry_reorder_chunks
from iothub.telemetry.services import telemetry_rollups_process
from iothub.telemetry.timescale import telemetry_apply_retention

logger = logging.getLogger(__name__)


def worker_outboxes() -> list[Outbox]:
    """The hub's outboxes, each run by the engine on lanes of its own."""
    return [MachineCommandOutbox(), DeliveryOutbox()]


@dataclass
class PeriodicJob:
    """A task run every `every`, first at start-up. Workers on other hosts may run it too; a
    transaction-scoped advisory lock lets one of them at a time do it, and the others skip."""

    name: str
    every: timedelta
    task: Callable[[], int]

    def run(self) -> int:
        """Run the task unless another worker is running it; how many rows it changed."""
        lock_key = zlib.crc32(f"iothub.worker.{self.name}".encode())
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [lock_key])
                if not cursor.fetchone()[0]:
                    logger.info("%s: another worker is running it; skipped", self.name)
                    return 0
            done = self.task()
        # A task run every second that found nothing to do says so at DEBUG only.
        logger.log(logging.INFO if done else logging.DEBUG, "%s: %d", self.name, done)
        return done


def _devices_mark_inactive() -> int:
    return devices_mark_inactive(silent_for=timedelta(seconds=settings.IOTHUB_INACTIVE_AFTER_SECONDS))


def periodic_jobs() -> list[PeriodicJob]:
    return [
        PeriodicJob(
            "device_inactivity",
            every=timedelta(seconds=settings.IOTHUB_WORKER_INACTIVITY_CHECK_SECONDS),
            task=_devices_mark_inactive,
        ),
        PeriodicJob(
            "rules_nodata",
            every=timedelta(seconds=settings.IOTHUB_WORKER_ALARM_CHECK_SECONDS),
            task=nodata_rules_evaluate,
        ),
        PeriodicJob(
            "event_follow_ups",
            every=timedelta(seconds=settings.IOTHUB_WORKER_ALARM_CHECK_SECONDS),
            task=event_follow_ups_send,
        ),
        PeriodicJob(
            "telemetry_retention",
            every=timedelta(seconds=settings.IOTHUB_WORKER_RETENTION_CHECK_SECONDS),
            task=telemetry_apply_retention,
        ),
        PeriodicJob(
            "telemetry_chunk_reorder",
            every=timedelta(seconds=settings.IOTHUB_WORKER_REORDER_CHECK_SECONDS),
            task=telemetry_reorder_chunks,
        ),
        PeriodicJob(
            "telemetry_rollups",
            every=timedelta(seconds=settings.IOTHUB_WORKER_ROLLUP_SECONDS),
            task=telemetry_rollups_process,
        ),
    ]

"""Writes to the machine-command outbox: enqueueing a `stop_machine` action inside the ingest
transaction, and running due commands from the worker.

Running a command holds its row lock (`FOR UPDATE SKIP LOCKED`) for the length of the call, so
any number of workers share the queue and never call for one command at once; a worker that dies
mid-call loses its connection and its lock, and the command is due again at once, with the same
idempotency key. Retries back off: the delay doubles after each failed attempt.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from iothub import metrics
from iothub.events.models import Event
from iothub.events.services import RESULT_COMPLETED, RESULT_FAILED, event_action_result_update, execution_time_text
from iothub.machines.client import MachineApiError, machine_stop
from iothub.machines.models import CommandStatus, MachineCommand

logger = logging.getLogger(__name__)

# NOTIFY channel that wakes the worker when a command is enqueued (delivered at commit).
MACHINE_COMMANDS_CHANNEL = "iothub_machine_commands"


def machine_command_enqueue(*, event: Event, action_index: int, machine_id: str) -> MachineCommand:
    """Queue a stop of `machine_id` for an event's `stop_machine` action; the worker calls the
    machine API after the transaction commits. Nothing external is called here."""
    command = MachineCommand(event=event, action_index=action_index, machine_id=machine_id)
    command.save(force_insert=True)
    with connection.cursor() as cursor:
        # Notifications are sent at commit, and one per channel and payload per transaction.
        cursor.execute("SELECT pg_notify(%s, '')", [MACHINE_COMMANDS_CHANNEL])
    return command


def machine_command_next_due() -> datetime | None:
    """When the earliest pending command is due (possibly in the past); None when none is pending."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(next_attempt_at) FROM machine_commands WHERE status = 'pending'")
        return cursor.fetchone()[0]


def machine_command_run_next() -> int:
    """Claim one due command, call the machine API, record the outcome; 1 if a command ran."""
    with transaction.atomic():
        command = (
            MachineCommand.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("event")
            .filter(status=CommandStatus.PENDING, next_attempt_at__lte=Now())
            .order_by("next_attempt_at", "id")
            .first()
        )
        if command is None:
            return 0
        try:
            machine_stop(
                machine_id=command.machine_id,
                idempotency_key=str(command.event_id),
                reason=command.event.message,
            )
        except MachineApiError as exc:
            _record_failure(command=command, error=exc)
        else:
            _record_success(command=command)
    return 1


def _result_update(*, command: MachineCommand, changes: dict) -> None:
    """Update the action's entry in the event's `execution_results`. An entry that is gone (the
    event's results rewritten by hand) must not roll back the record of a call already made, which
    would make the machine be asked again and again."""
    try:
        event_action_result_update(event_id=command.event_id, index=command.action_index, changes=changes)
    except LookupError:
        logger.warning(
            "event %s has no action %d any more; machine command %s recorded on its row only",
            command.event_id,
            command.action_index,
            command.id,
        )


def _record_success(*, command: MachineCommand) -> None:
    now = timezone.now()
    command.status = CommandStatus.COMPLETED
    command.attempt_count += 1
    command.last_attempt_at = now
    command.finished_at = now
    command.updated_at = now
    command.save(update_fields=["status", "attempt_count", "last_attempt_at", "finished_at", "updated_at"])
    _result_update(
        command=command,
        changes={
            "status": RESULT_COMPLETED,
            "completed_at": execution_time_text(now),
            "attempts": command.attempt_count,
        },
    )
    metrics.machine_command_attempted(outcome="completed")
    logger.info(
        "stopped machine %s for event %s", command.machine_id, command.event_id, extra=_log_fields(command, "completed")
    )


def _record_failure(*, command: MachineCommand, error: MachineApiError) -> None:
    now = timezone.now()
    command.attempt_count += 1
    command.last_attempt_at = now
    command.last_error = str(error)
    command.updated_at = now
    if error.retryable and command.attempt_count < settings.IOTHUB_MACHINE_API_MAX_ATTEMPTS:
        delay = timedelta(seconds=settings.IOTHUB_MACHINE_API_RETRY_DELAY_SECONDS * 2 ** (command.attempt_count - 1))
        command.next_attempt_at = now + delay
        command.save(update_fields=["attempt_count", "last_attempt_at", "last_error", "next_attempt_at", "updated_at"])
        _result_update(command=command, changes={"attempts": command.attempt_count, "last_error": str(error)})
        metrics.machine_command_attempted(outcome="retry")
        logger.warning(
            "stop of machine %s for event %s failed (%s); retry %d in %s",
            command.machine_id,
            command.event_id,
            error,
            command.attempt_count,
            delay,
            extra=_log_fields(command, "retry"),
        )
        return
    command.status = CommandStatus.FAILED
    command.finished_at = now
    command.save(
        update_fields=["status", "attempt_count", "last_attempt_at", "last_error", "finished_at", "updated_at"]
    )
    _result_update(
        command=command,
        changes={
            "status": RESULT_FAILED,
            "error": str(error),
            "failed_at": execution_time_text(now),
            "attempts": command.attempt_count,
        },
    )
    metrics.machine_command_attempted(outcome="failed")
    logger.error(
        "stop of machine %s for event %s failed for good after %d attempt(s): %s",
        command.machine_id,
        command.event_id,
        command.attempt_count,
        error,
        extra=_log_fields(command, "failed"),
    )


def _log_fields(command: MachineCommand, outcome: str) -> dict:
    """The ids a JSON log line carries for one machine call, as fields a collector can filter on."""
    return {
        "machine_command_id": command.id,
        "event_id": command.event_id,
        "machine_id": command.machine_id,
        "attempt": command.attempt_count,
        "outcome": outcome,
    }

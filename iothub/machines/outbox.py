"""Machine stop calls as an outbox of the worker's engine (`iothub.outbox`, docs/worker.md).

The queue is the `machine_commands` table (one row per `stop_machine` action of an event). What is
this outbox's own:

- `send`: `POST {IOTHUB_MACHINE_API_URL}/machines/{machine_id}/stop` with the event id as
  `Idempotency-Key` (`client.py`), on a thread;
- the retry schedule: the delay doubles after each failed attempt
  (IOTHUB_MACHINE_API_RETRY_DELAY_SECONDS * 2^(n-1)), IOTHUB_MACHINE_API_MAX_ATTEMPTS attempts in
  all; an answer that asking again cannot change (a 4xx other than 408 and 429) fails at once;
- the event's entry (at the action's index): `pending` with `attempts` and `last_error` while it
  is retried, then `completed` with `completed_at`, or `failed` with `error` and `failed_at`.
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings

from iothub import metrics
from iothub.events.services import RESULT_COMPLETED, RESULT_FAILED, execution_time_text
from iothub.machines.client import machine_stop
from iothub.machines.models import CommandStatus
from iothub.machines.services import MACHINE_COMMANDS_CHANNEL
from iothub.outbox import ActionState, Outcome, Queue

logger = logging.getLogger(__name__)

QUEUE = Queue(
    table="machine_commands",
    channel=MACHINE_COMMANDS_CHANNEL,
    done_status=CommandStatus.COMPLETED,
    error_column="last_error",
    finished_at_column="finished_at",
    updated_at_column="updated_at",
    order_by="q.created_at, q.id",
    action_key="action_index",
    columns="q.id, q.event_id, q.machine_id, e.message",
    joins="JOIN events e ON e.id = q.event_id",
)


@dataclass(frozen=True)
class MachineCall:
    command_id: int
    event_id: int
    machine_id: str
    reason: str  # the event's message


class MachineCommandOutbox:
    """The machine commands, as the engine runs them (`iothub.outbox.Outbox`)."""

    queue = QUEUE
    # Calls in flight per worker: stops are few, and a plant's machine API is no web service.
    concurrency = 4

    def load(self, rows: list[tuple]) -> list[MachineCall]:
        return [MachineCall(*row) for row in rows]

    async def send(self, call: MachineCall) -> None:
        # httpx's blocking client, on a thread: stops are too few for their cost to matter.
        await asyncio.to_thread(
            machine_stop, machine_id=call.machine_id, idempotency_key=str(call.event_id), reason=call.reason
        )

    def retry_delay(self, call: MachineCall, attempts: int) -> timedelta | None:
        if attempts >= settings.IOTHUB_MACHINE_API_MAX_ATTEMPTS:
            return None
        return timedelta(seconds=settings.IOTHUB_MACHINE_API_RETRY_DELAY_SECONDS * 2 ** (attempts - 1))

    def describe(self, action: ActionState) -> dict:
        if action.pending:
            return {"attempts": action.attempts, "last_error": action.error}
        at = execution_time_text(action.last_attempt_at)
        if action.done:
            return {"status": RESULT_COMPLETED, "completed_at": at, "attempts": action.attempts}
        return {"status": RESULT_FAILED, "error": action.error, "failed_at": at, "attempts": action.attempts}

    def entries(self, results: list, key: int) -> list[int]:
        return [key] if 0 <= key < len(results) else []

    def report(self, call: MachineCall, outcome: Outcome) -> None:
        metrics.machine_command_attempted(outcome=outcome.label)
        fields = {
            "machine_command_id": call.command_id,
            "event_id": call.event_id,
            "machine_id": call.machine_id,
            "attempt": outcome.attempt,
            "outcome": outcome.label,
        }
        if outcome.status == CommandStatus.COMPLETED:
            logger.info("stopped machine %s for event %s", call.machine_id, call.event_id, extra=fields)
        elif outcome.status == CommandStatus.PENDING:
            logger.warning(
                "stop of machine %s for event %s failed (%s); retry %d in %s",
                call.machine_id,
                call.event_id,
                outcome.error,
                outcome.attempt,
                outcome.retry_in,
                extra=fields,
            )
        else:
            logger.error(
                "stop of machine %s for event %s failed for good after %d attempt(s): %s",
                call.machine_id,
                call.event_id,
                outcome.attempt,
                outcome.error,
                extra=fields,
            )

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

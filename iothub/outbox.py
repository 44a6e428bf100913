"""The outbox contract: what a queue of outgoing work says about itself so that the worker's one
engine (`iothub/worker/engine.py`, docs/worker.md) can run it.

An outbox is a table whose rows are things to send for an event: notification deliveries, machine
stop calls, tomorrow reminders and escalations. Ingest writes the rows inside the transaction that
raises the event; the engine claims due rows in batches, sends them concurrently, records the
outcomes and completes the event's `execution_results`. An outbox supplies only what is its own:

- `queue`: its table and the names of the columns the engine reads and writes (`Queue`);
- `load(rows)`: the claimed rows (the columns of `Queue.columns`) as the items it sends;
- `send(item)`: send one item; return when it is accepted, raise `SendFailed` when not;
- `retry_delay(item, attempts)`: how long after a failed attempt the next is due, or None when
  that was the last attempt (the row's own schedule: the engine writes it to `next_attempt_at`);
- `describe(action)`: the changes an action's state makes to its `execution_results` entry, and
  `entries(results, key)`: which entries of the event's results belong to the action;
- `report(item, outcome)`: the log line and the metrics of one attempt;
- `open()` / `close()`: what it keeps while the worker runs (an HTTP session).

It sits on the ground floor: the domain apps define their outboxes with it and import nothing of
the worker, which imports them.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

PENDING = "pending"
FAILED = "failed"


class SendFailed(Exception):
    """The item was not accepted; the message is kept as the row's last error. `permanent`
    failures (a refused address, a channel that is not configured, a request the receiver calls
    wrong) are not retried: asking again cannot change the answer."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Queue:
    """An outbox table as the engine sees it.

    Every outbox table has `id`, `event_id`, `status` (`pending` while queued, then `done_status`
    or `failed`), `attempt_count`, `last_attempt_at`, `next_attempt_at` (when it is due) and an
    index on `next_attempt_at` where `status = 'pending'`. The rest is named here.
    """

    table: str
    channel: str  # NOTIFY channel that ingest signals in the transaction that writes rows
    done_status: str  # the status of a row whose send succeeded: `sent`, `completed`
    error_column: str  # the last attempt's error (NULL after a success)
    order_by: str  # the claim's order among due rows, over the table as `q`: priority, then age
    # Which event action a row belongs to, besides `event_id` (an integer column): the rows of an
    # action are counted together into its `execution_results` entry.
    action_key: str
    # What sending needs: a select list over the table as `q` and the tables of `joins`.
    columns: str
    joins: str = ""
    done_at_column: str | None = None  # set to the attempt's time when the send succeeded
    finished_at_column: str | None = None  # set when the row is final, sent or failed
    updated_at_column: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to, as the engine recorded it."""

    status: str  # `pending` (to be retried), the queue's done_status, or `failed`
    attempt: int  # its number, the first is 1
    error: str | None
    retry_in: timedelta | None  # pending only: how long until the next attempt

    @property
    def label(self) -> str:
        """`sent`, `retry` or `failed`, as metrics and logs name outcomes."""
        return "retry" if self.status == PENDING else self.status


@dataclass(frozen=True)
class ActionState:
    """How the rows of one event action stand after a batch was recorded."""

    event_id: int
    key: Any  # the row's `Queue.action_key` value: a template id, an action index
    pending: int
    done: int
    failed: int
    attempts: int  # the most attempts of any of its rows
    error: str | None  # the error of its most recent attempt, if that one failed
    last_attempt_at: datetime | None


class Outbox(Protocol):
    queue: Queue
    concurrency: int  # sends in flight at once per worker

    def load(self, rows: list[tuple]) -> list[Any]: ...

    async def send(self, item: Any) -> None: ...

    def retry_delay(self, item: Any, attempts: int) -> timedelta | None: ...

    def describe(self, action: ActionState) -> dict | None: ...

    def entries(self, results: list, key: Any) -> list[int]: ...

    def report(self, item: Any, outcome: Outcome) -> None: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

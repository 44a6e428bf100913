"""The worker's one job engine: every outbox (`iothub.outbox`) runs on it.

A lane is one database connection that repeats one batch at a time (`Lane.run_batch`):

1. **Claim**: in one transaction, the most urgent due rows no one else holds, up to the lane's
   size: `WHERE status = 'pending' AND next_attempt_at <= now() ORDER BY <priority, age>
   LIMIT n FOR UPDATE OF q SKIP LOCKED`, with what sending needs joined in. Any number of lanes and
   workers on any hosts each take different rows.
2. **Send** them all at once (asyncio tasks; an outbox's blocking sends run on threads).
3. **Record** every outcome in one statement: `sent`/`completed`, `pending` again with
   `next_attempt_at` set by the outbox's retry schedule, or `failed`.
4. **Complete** the events' `execution_results`: lock the batch's events (in id order), count each
   touched action's rows, merge what the outbox says about the action into its entries, in one
   statement. Then commit.

Crash safety: a lane holds its claimed rows' locks until the commit. A worker killed anywhere
before it loses its connection; PostgreSQL rolls the batch back and releases the rows, which are
due again at once for any worker, their attempts uncounted. A send may have gone out before the
kill: delivery is at-least-once, and a repeat carries the same idempotency key (`webhook-id`).

An outbox's `concurrency` is the number of its sends in flight per worker: slots its lanes share
(`Slots`). A lane takes up to a batch of free slots, claims that many rows, and gives each slot back
as soon as its send ends, before the batch is recorded; the outbox has one lane more than the slots
fill, so that freed slots are claimed again while a lane records. A batch is recorded when its
slowest send ends (at most the channel's timeout); the other lanes go on meanwhile.
"""

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection
from django.utils import timezone
from psycopg.types.json import Jsonb

from iothub.outbox import FAILED, PENDING, ActionState, Outbox, Outcome, SendFailed

logger = logging.getLogger(__name__)

IDLE_WAIT = 60.0  # seconds an idle lane sleeps at most, whatever the queue says
# Seconds an idle lane sleeps at least after a claim that found nothing, even if a row is due: a
# due row can be held by another lane in the middle of its batch, and must not make this one spin.
# New work still wakes it at once (NOTIFY).
MIN_WAIT = 1.0
ERROR_PAUSE = 5.0  # seconds a lane rests after a failed batch (a lost database) before it reconnects


def database_params() -> dict:
    """Connection parameters for the engine's own psycopg connections, from Django's settings
    (the Python-side options Django adds for its own cursors left out)."""
    params = connection.get_connection_params()
    for key in ("context", "cursor_factory", "prepare_threshold"):
        params.pop(key, None)
    return params


@dataclass(frozen=True)
class Claimed:
    id: int
    attempts: int  # before this one
    event_id: int
    key: Any
    item: Any


class Statements:
    """The engine's SQL for one outbox, written once from its `Queue`."""

    def __init__(self, outbox: Outbox):
        q = outbox.queue
        self.claim = f"""
            SELECT q.id, COALESCE(q.attempt_count, 0), q.event_id, q.{q.action_key}, {q.columns}
            FROM {q.table} q {q.joins}
            WHERE q.status = 'pending' AND q.next_attempt_at <= now()
            ORDER BY {q.order_by}
            LIMIT %(limit)s
            FOR UPDATE OF q SKIP LOCKED
        """  # noqa: S608 - identifiers from the outbox's Queue, values bound
        extra = "".join(
            f", {column} = {value}"
            for column, value in (
                (q.done_at_column, "CASE WHEN v.status = %(done)s THEN v.at END"),
                (q.finished_at_column, "CASE WHEN v.status <> 'pending' THEN v.at END"),
                (q.updated_at_column, "v.at"),
            )
            if column
        )
        self.record = f"""
            UPDATE {q.table} AS q
            SET status = v.status, attempt_count = v.attempt, last_attempt_at = v.at,
                next_attempt_at = v.at + COALESCE(v.retry_in, interval '0'), {q.error_column} = v.error{extra}
            FROM (
                SELECT u.*, statement_timestamp() AS at
                FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(attempts)s::integer[], %(errors)s::text[],
                            %(retry_in)s::interval[]) AS u(id, status, attempt, error, retry_in)
            ) AS v
            WHERE q.id = v.id
        """  # noqa: S608
        self.actions = f"""
            SELECT q.event_id, q.{q.action_key},
                   count(*) FILTER (WHERE q.status = 'pending'),
                   count(*) FILTER (WHERE q.status = %(done)s),
                   count(*) FILTER (WHERE q.status = 'failed'),
                   COALESCE(max(q.attempt_count), 0),
                   (array_agg(q.{q.error_column} ORDER BY q.last_attempt_at DESC NULLS LAST))[1],
                   max(q.last_attempt_at)
            FROM {q.table} q
            JOIN unnest(%(events)s::bigint[], %(keys)s::bigint[]) AS a(event_id, key)
              ON q.event_id = a.event_id AND q.{q.action_key} = a.key
            GROUP BY q.event_id, q.{q.action_key}
        """  # noqa: S608
        self.next_due = f"SELECT min(next_attempt_at) FROM {q.table} WHERE status = 'pending'"  # noqa: S608


EVENTS_LOCK = "SELECT id, execution_results FROM events WHERE id = ANY(%(ids)s) ORDER BY id FOR NO KEY UPDATE"
EVENTS_WRITE = """
    UPDATE events AS e SET execution_results = v.results
    FROM unnest(%(ids)s::bigint[], %(results)s::jsonb[]) AS v(id, results)
    WHERE e.id = v.id
"""


class Lane:
    """One database connection running one batch of an outbox at a time."""

    def __init__(self, outbox: Outbox, *, size: int, params: dict, statements: Statements | None = None):
        self.outbox = outbox
        self.size = size
        self.params = params
        self.sql = statements or Statements(outbox)
        self.done = outbox.queue.done_status
        self._conn: psycopg.AsyncConnection | None = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(**self.params)
        return self._conn

    async def close(self) -> None:
        """Close the connection (a broken one too); the next batch opens a new one."""
        if self._conn is not None:
            try:
                await self._conn.close()
            finally:
                self._conn = None

    async def next_due(self):
        """When the earliest pending row is due (possibly in the past); None when none is pending."""
        conn = await self._connection()
        async with conn.transaction():
            row = await (await conn.execute(self.sql.next_due)).fetchone()
        return row[0]

    async def run_batch(self, *, size: int | None = None, release: Callable[[int], None] | None = None) -> int:
        """Claim, send, record and complete one batch of at most `size` rows (default: the lane's),
        in one transaction; how many rows it had (0: nothing was due).

        `release(n)` is told as soon as `n` of the `size` send slots are free again: the slots the
        claim did not fill, then one per finished send, all before the batch is recorded, so that
        another lane may fill them meanwhile."""
        size = size or self.size
        outstanding = size

        def free(count: int) -> None:
            nonlocal outstanding
            outstanding -= count
            if release is not None:
                release(count)

        try:
            conn = await self._connection()
            async with conn.transaction():
                rows = await (await conn.execute(self.sql.claim, {"limit": size}, prepare=True)).fetchall()
                free(size - len(rows))
                if not rows:
                    return 0
                items = self.outbox.load([row[4:] for row in rows])
                claimed = [Claimed(r[0], r[1], r[2], r[3], item) for r, item in zip(rows, items, strict=True)]
                errors = await asyncio.gather(*(self._attempt(c, free) for c in claimed))
                outcomes = [self._outcome(c, error) for c, error in zip(claimed, errors, strict=True)]
                await self._record(conn, claimed, outcomes)
                await self._complete(conn, claimed)
        finally:
            if outstanding:
                free(outstanding)
        for c, outcome in zip(claimed, outcomes, strict=True):
            self.outbox.report(c.item, outcome)
        return len(claimed)

    async def _attempt(self, claimed: Claimed, sent: Callable[[int], None]) -> SendFailed | None:
        """Send once; the failure, if any. An unexpected exception is a failure of this item (to be
        retried), not of the batch."""
        try:
            await self.outbox.send(claimed.item)
        except SendFailed as failure:
            return failure
        except Exception as exc:
            logger.exception("%s %s: unexpected error while sending", self.outbox.queue.table, claimed.id)
            return SendFailed(f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            sent(1)
        return None

    def _outcome(self, claimed: Claimed, error: SendFailed | None) -> Outcome:
        attempt = claimed.attempts + 1
        if error is None:
            return Outcome(status=self.done, attempt=attempt, error=None, retry_in=None)
        delay = None if error.permanent else self.outbox.retry_delay(claimed.item, attempt)
        if delay is None:
            return Outcome(status=FAILED, attempt=attempt, error=str(error), retry_in=None)
        return Outcome(status=PENDING, attempt=attempt, error=str(error), retry_in=delay)

    async def _record(self, conn, claimed: list[Claimed], outcomes: list[Outcome]) -> None:
        await conn.execute(
            self.sql.record,
            {
                "ids": [c.id for c in claimed],
                "statuses": [o.status for o in outcomes],
                "attempts": [o.attempt for o in outcomes],
                "errors": [o.error for o in outcomes],
                "retry_in": [o.retry_in or timedelta(0) for o in outcomes],
                "done": self.done,
            },
            prepare=True,
        )

    async def _complete(self, conn, claimed: list[Claimed]) -> None:
        """Write the batch's actions into their events' `execution_results`.

        The events are locked first, in id order, and the actions counted after: READ COMMITTED
        gives that count a snapshot taken once the lock is held, so of two batches finishing the
        last rows of one action at the same moment, the second sees the first's rows final and
        completes the entry.
        """
        actions = sorted({(c.event_id, c.key) for c in claimed})
        event_ids = sorted({event_id for event_id, _ in actions})
        results = dict(await (await conn.execute(EVENTS_LOCK, {"ids": event_ids}, prepare=True)).fetchall())
        states = await (
            await conn.execute(
                self.sql.actions,
                {"events": [a[0] for a in actions], "keys": [a[1] for a in actions], "done": self.done},
                prepare=True,
            )
        ).fetchall()
        changed: dict[int, list] = {}
        for row in states:
            state = ActionState(*row)
            changes = self.outbox.describe(state)
            current = results.get(state.event_id)
            if not changes or current is None:
                continue
            entries = self.outbox.entries(current, state.key) if isinstance(current, list) else []
            if not entries:
                # The event's results were rewritten by hand: the row keeps the record of the
                # attempt, which must not be rolled back (the call would be made again and again).
                logger.warning(
                    "event %s has no %s entry for %s any more; recorded on the %s row only",
                    state.event_id,
                    self.outbox.queue.table,
                    state.key,
                    self.outbox.queue.table,
                )
                continue
            updated = changed.setdefault(state.event_id, list(current))
            for index in entries:
                updated[index] = {**updated[index], **changes}
        if changed:
            await conn.execute(
                EVENTS_WRITE,
                {"ids": list(changed), "results": [Jsonb(results) for results in changed.values()]},
                prepare=True,
            )


class Slots:
    """The sends an outbox may have in flight in one worker, shared by its lanes: a lane takes
    slots before it claims, and each comes back as soon as its send ends."""

    def __init__(self, total: int):
        self.free = total
        self._freed = asyncio.Event()
        self._stopping = False

    async def take(self, most: int, *, least: int) -> int:
        """Wait until at least `least` slots are free, then take up to `most`; 0 once stopping."""
        while self.free < least and not self._stopping:
            self._freed.clear()
            await self._freed.wait()
        if self._stopping:
            return 0
        taken = min(most, self.free)
        self.free -= taken
        return taken

    def give(self, count: int) -> None:
        self.free += count
        self._freed.set()

    def stop(self) -> None:
        self._stopping = True
        self._freed.set()


class OutboxRunner:
    """An outbox's lanes in one worker. Its `concurrency` sends in flight are slots the lanes share:
    a lane takes up to a batch of them (at least half a batch), claims that many due rows, and
    gives each slot back when its send ends. One lane more than the slots fill keeps them busy
    while a lane records its batch. A lane whose claim finds nothing sleeps until the queue's next
    due time, a wake-up (NOTIFY on the outbox's channel) or a stop."""

    def __init__(self, outbox: Outbox, *, params: dict, batch_size: int | None = None):
        self.outbox = outbox
        self.name = outbox.queue.table
        self.channel = outbox.queue.channel
        concurrency = outbox.concurrency
        size = min(batch_size or settings.IOTHUB_WORKER_BATCH_SIZE, concurrency)
        self.slots = Slots(concurrency)
        self.least = max(1, size // 2)
        statements = Statements(outbox)
        count = math.ceil(concurrency / size) + 1
        self.lanes = [Lane(outbox, size=size, params=params, statements=statements) for _ in range(count)]
        self._wakes = [asyncio.Event() for _ in self.lanes]
        self._stopping = False
        # Monotonic time at which each lane last finished a turn (a batch, or a wait): liveness.
        self.last_turn = [time.monotonic() for _ in self.lanes]

    def wake(self) -> None:
        for event in self._wakes:
            event.set()

    def stop(self) -> None:
        """No new batch after the ones in flight, which finish and are recorded."""
        self._stopping = True
        self.slots.stop()
        self.wake()

    async def run(self) -> None:
        await asyncio.gather(*(self._run_lane(n) for n in range(len(self.lanes))))

    async def _run_lane(self, n: int) -> None:
        lane, wake = self.lanes[n], self._wakes[n]
        try:
            while not self._stopping:
                wake.clear()  # before the claim: a NOTIFY during it makes the wait below return at once
                taken = await self.slots.take(lane.size, least=self.least)
                if not taken:
                    break  # stopping
                try:
                    handled = await lane.run_batch(size=taken, release=self.slots.give)
                    if handled >= taken:
                        self.wake()  # a full batch: there may be more, for the idle lanes too
                    if not handled:
                        await self._idle(lane, wake)
                except Exception:
                    # Mostly a lost database: the batch rolled back with it and is due again.
                    logger.exception("%s: batch failed; reconnecting in %.0f s", self.name, ERROR_PAUSE)
                    await lane.close()
                    await self._rest(wake, ERROR_PAUSE)
                self.last_turn[n] = time.monotonic()
        finally:
            await lane.close()

    async def _idle(self, lane: Lane, wake: asyncio.Event) -> None:
        due = await lane.next_due()
        wait = IDLE_WAIT
        if due is not None:
            wait = min(IDLE_WAIT, max(MIN_WAIT, (due - timezone.now()).total_seconds()))
        await self._rest(wake, wait)

    async def _rest(self, wake: asyncio.Event, seconds: float) -> None:
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=seconds)

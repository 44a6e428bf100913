"""The batched writer: one thread per process that stores whatever requests are waiting, together,
in one transaction (group commit), and hands each request its outcome when that transaction has
committed.

    door thread(s)                        writer thread
    submit(request) -> Future ──queue──▶  take the first request waiting, then every other one
    (HTTP: awaited; MQTT: acked on        waiting (up to IOTHUB_INGEST_BATCH_MESSAGES messages,
     done; WSGI: waited for)              after IOTHUB_INGEST_BATCH_WAIT_MS if set)
                                          ingest_batch(batch): one transaction
                  ◀──── set_result ────── one outcome per request, after the commit

While a batch commits, the next one gathers, so the batch grows with the load and a lone request
waits for nothing but its own commit. One writer per process: two writers in one process would
mostly take turns on the rows of the same devices (DESIGN.md).

While the database is unreachable, requests are answered `Unavailable` (503) at once rather than
each batch waiting for a pooled connection (`DB_POOL_TIMEOUT`): once a batch has found it unreachable,
the writer checks with a short connection attempt, at most every PROBE_SECONDS, and takes the next
batch to the database only when that attempt succeeds.

The writer also keeps the idempotency keys' table small: at most every EXPIRE_KEYS_SECONDS, after a
batch, it deletes the keys past their keeping time (each process does; the delete is idempotent).

A caller already inside a transaction (a test's, or a service's) is not handed to the thread,
whose connection could not see that transaction's rows: `ingest_one` stores its request in the
caller's transaction instead, through the same `ingest_batch`.
"""

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future

import psycopg
from django.conf import settings
from django.db import connection

from iothub.db import DATABASE_ERRORS
from iothub.ingest.services import (
    UNAVAILABLE,
    IngestRequest,
    Outcome,
    Unavailable,
    idempotency_keys_expire,
    ingest_batch,
)

logger = logging.getLogger(__name__)

_STOP = object()
# While the database is unreachable: how often, and how patiently, the writer checks it is back.
PROBE_SECONDS = 0.5
PROBE_CONNECT_TIMEOUT = 2
EXPIRE_KEYS_SECONDS = 3600


class IngestWriter:
    def __init__(self, *, max_messages: int, wait_seconds: float = 0.0):
        self.max_messages = max_messages
        self.wait_seconds = wait_seconds
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # batches written, for tests and the log
        self._unreachable = False  # the last batch found the database unreachable
        self._last_probe = 0.0
        self._keys_expired_at = time.monotonic()

    def submit(self, request: IngestRequest) -> "Future[Outcome]":
        """Queue a request; the future's result is its outcome, set after its batch commits (or
        the exception that failed the batch, for the caller to answer 500)."""
        future: Future[Outcome] = Future()
        self._start()
        self._queue.put((request, future))
        return future

    def submit_then(self, request: IngestRequest, done: Callable[[Outcome | None, BaseException | None], None]) -> None:
        """Queue a request; `done(outcome, None)` is called on the writer's thread after its batch
        commits, or `done(None, error)` if the batch failed. For a door that needs no future per
        request (the MQTT consumer): `done` must be quick and must not block."""
        self._start()
        self._queue.put((request, done))

    def submit_async(self, request: IngestRequest) -> "asyncio.Future[Outcome]":
        """As `submit`, for a caller on an event loop (the HTTP door), without a thread-safe future
        per request: the writer sets the results of a batch's requests of one loop in a single
        call on that loop, one wake-up per batch rather than per request."""
        future = asyncio.get_running_loop().create_future()
        self._start()
        self._queue.put((request, future))
        return future

    def stop(self, timeout: float = 30.0) -> None:
        """Store what is queued, then end the thread."""
        thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(timeout)

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                first = self._queue.get()
                if first is _STOP:
                    break
                batch, stopping = self._gather(first)
                self._write(batch)
                self._housekeeping()
                if self._queue.empty():
                    # Idle: the connection goes back to the pool, which checks it before the next
                    # batch (a database restarted meanwhile costs no failed request).
                    connection.close()
        finally:
            connection.close()

    def _gather(self, first) -> tuple[list, bool]:
        batch = [first]
        messages = first[0].message_count
        deadline = time.monotonic() + self.wait_seconds
        while messages < self.max_messages:
            try:
                remaining = deadline - time.monotonic()
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
            messages += item[0].message_count
        return batch, False

    def _write(self, batch: list) -> None:
        if self._unreachable and not self._database_answers():
            _settle([(future, UNAVAILABLE, None) for _, future in batch])
            return
        try:
            outcomes = ingest_batch([request for request, _ in batch])
        except Exception as error:
            logger.exception("ingest writer: a batch of %d requests failed", len(batch))
            # Whatever state the connection is in, the next batch starts on a sound one.
            connection.close()
            _settle([(future, None, error) for _, future in batch])
            return
        self.batches += 1
        self._unreachable = any(isinstance(outcome, Unavailable) for outcome in outcomes)
        _settle([(future, outcome, None) for (_, future), outcome in zip(batch, outcomes, strict=True)])

    def _housekeeping(self) -> None:
        if self._unreachable or time.monotonic() - self._keys_expired_at < EXPIRE_KEYS_SECONDS:
            return
        self._keys_expired_at = time.monotonic()
        try:
            expired = idempotency_keys_expire()
        except DATABASE_ERRORS:
            logger.warning("ingest writer: expiring idempotency keys failed; trying again later", exc_info=True)
            connection.close()
            return
        if expired:
            logger.info("ingest writer: %d idempotency keys expired", expired)

    def _database_answers(self) -> bool:
        """Whether a new connection to the database opens now (checked at most every PROBE_SECONDS;
        False in between)."""
        now = time.monotonic()
        if now - self._last_probe < PROBE_SECONDS:
            return False
        self._last_probe = now
        try:
            psycopg.connect(**connection.get_connection_params(), connect_timeout=PROBE_CONNECT_TIMEOUT).close()
        except psycopg.Error:
            return False
        return True


def _settle(results: list) -> None:
    """Set each future's outcome (or exception): thread-safe futures and callbacks here, those of
    an event loop in one call per loop."""
    by_loop = defaultdict(list)
    for future, outcome, error in results:
        if isinstance(future, asyncio.Future):
            by_loop[future.get_loop()].append((future, outcome, error))
        elif not isinstance(future, Future):  # a callback (`submit_then`)
            try:
                future(outcome, error)
            except Exception:
                logger.exception("ingest writer: a request's callback failed")
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)
    for loop, loop_results in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle_on_loop, loop_results)


def _settle_on_loop(results: list) -> None:
    for future, outcome, error in results:
        if future.cancelled():  # the client went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)


_writer: IngestWriter | None = None
_writer_pid: int | None = None
_writer_lock = threading.Lock()


def ingest_writer() -> IngestWriter:
    """This process's writer, made on first use (after a fork, a new one: threads do not survive
    it)."""
    global _writer, _writer_pid
    if _writer is None or _writer_pid != os.getpid():
        with _writer_lock:
            if _writer is None or _writer_pid != os.getpid():
                _writer = IngestWriter(
                    max_messages=settings.IOTHUB_INGEST_BATCH_MESSAGES,
                    wait_seconds=settings.IOTHUB_INGEST_BATCH_WAIT_MS / 1000,
                )
                _writer_pid = os.getpid()
    return _writer


def ingest_one(request: IngestRequest) -> Outcome:
    """Store one request and wait for its outcome: through this process's writer, or, inside a
    transaction, in that transaction."""
    if connection.in_atomic_block:
        return ingest_batch([request])[0]
    return ingest_writer().submit(request).result()

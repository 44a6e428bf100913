"""The worker process: `manage.py run_worker` runs it; one process, any number of them, on any hosts.

One asyncio event loop holds:

- a **listener**: a connection in autocommit that LISTENs on every outbox's channel and wakes that
  outbox's lanes when ingest commits new rows (PostgreSQL delivers a NOTIFY at commit), so a new
  event's webhook leaves within milliseconds, with no polling. LISTEN is in place before the lanes'
  first claim, and after every reconnection the lanes look again for what was committed meanwhile;
- the **engine's lanes** (`engine.py`), a few per outbox, claiming and sending batches;
- the **periodic tasks** (device inactivity, retention), each on its own thread with Django's
  ORM, at start-up and then every interval;
- a **heartbeat**: every HEARTBEAT_EVERY seconds, while every lane has finished a turn within
  STUCK_AFTER, the worker marks itself alive: the `iothub_worker_last_round_timestamp_seconds`
  gauge and the heartbeat file that `python -m iothub.liveness worker` reads.

Stopping (`stop()`, on SIGTERM or SIGINT): no lane claims again; the batches in flight finish and
are recorded; then the process exits. A lost database is survived: each lane reconnects after
ERROR_PAUSE, and the listener too.
"""

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
from django.db import connection
from psycopg import sql

from iothub import metrics
from iothub.liveness import heartbeat_beat
from iothub.outbox import Outbox
from iothub.worker.engine import ERROR_PAUSE, IDLE_WAIT, OutboxRunner, database_params
from iothub.worker.jobs import PeriodicJob

logger = logging.getLogger(__name__)

HEARTBEAT_EVERY = 5.0
# A lane's turn ends at least every IDLE_WAIT (an idle lane looks at its queue) or when its batch
# does (at most the longest send timeout, 15 s by default); one silent for longer is stuck.
STUCK_AFTER = 2 * IDLE_WAIT


def _close_connection() -> None:
    """Close the calling thread's Django connection (`connection` is per thread)."""
    connection.close()


class Worker:
    def __init__(self, *, outboxes: list[Outbox], periodic: list[PeriodicJob], batch_size: int | None = None):
        self.outboxes = outboxes
        self.periodic = periodic
        self.batch_size = batch_size
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self.runners: list[OutboxRunner] = []

    def stop(self) -> None:
        """Ask the worker to exit once the batches in flight are recorded. Safe to call from a
        signal handler or another thread."""
        self._stopping = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()
        for runner in self.runners:
            runner.stop()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        params = database_params()
        self.runners = [OutboxRunner(outbox, params=params, batch_size=self.batch_size) for outbox in self.outboxes]
        # Blocking sends (email, SMS, machine calls) run on threads: as many as sends may be in flight.
        sends = sum(outbox.concurrency for outbox in self.outboxes)
        self._loop.set_default_executor(ThreadPoolExecutor(max_workers=max(4, sends), thread_name_prefix="send"))
        for outbox in self.outboxes:
            await outbox.open()
        listening = asyncio.Event()
        listener = asyncio.create_task(self._listen(params, listening))
        try:
            # The first LISTEN before the first claim (or its failure: the lanes retry on their own).
            await listening.wait()
            lanes = [asyncio.create_task(runner.run()) for runner in self.runners]
            chores = [asyncio.create_task(self._periodic(job)) for job in self.periodic]
            heartbeat = asyncio.create_task(self._heartbeat())
            logger.info(
                "worker started: outboxes %s, periodic %s, listening on %s",
                [f"{r.name} ({len(r.lanes)} lane(s) of {r.lanes[0].size})" for r in self.runners],
                [job.name for job in self.periodic],
                sorted({r.channel for r in self.runners}),
            )
            if self._stopping:
                self._stop_now()
            await asyncio.gather(*lanes, *chores, self._stop_event.wait())
            heartbeat.cancel()
        finally:
            listener.cancel()
            for outbox in self.outboxes:
                await outbox.close()
            logger.info("worker stopped")

    # --------------------------------------------------------------------------------------------

    async def _listen(self, params: dict, listening: asyncio.Event) -> None:
        channels = sorted({runner.channel for runner in self.runners})
        by_channel: dict[str, list[OutboxRunner]] = {}
        for runner in self.runners:
            by_channel.setdefault(runner.channel, []).append(runner)
        try:
            while not self._stopping:
                try:
                    async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as conn:
                        for channel in channels:
                            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                        if listening.is_set():
                            for runner in self.runners:  # reconnected: look for what was committed meanwhile
                                runner.wake()
                        listening.set()
                        async for notify in conn.notifies():
                            for runner in by_channel.get(notify.channel, []):
                                runner.wake()
                except psycopg.Error:
                    logger.warning("worker: the LISTEN connection failed; reconnecting", exc_info=True)
                    listening.set()
                    await self._pause(ERROR_PAUSE)
        finally:
            listening.set()  # a worker stopped before its first LISTEN must not wait for one

    async def _periodic(self, job: PeriodicJob) -> None:
        # One thread per task, keeping its Django connection between runs.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=job.name) as thread:
            while not self._stopping:
                try:
                    await self._loop.run_in_executor(thread, job.run)
                except Exception:
                    logger.exception("periodic task %s failed", job.name)
                    await self._loop.run_in_executor(thread, _close_connection)
                    await self._pause(ERROR_PAUSE)
                    continue
                await self._pause(job.every.total_seconds())
            await self._loop.run_in_executor(thread, _close_connection)

    async def _heartbeat(self) -> None:
        while True:
            now = time.monotonic()
            stuck = [
                f"{runner.name} lane {n}"
                for runner in self.runners
                for n, last in enumerate(runner.last_turn)
                if now - last > STUCK_AFTER
            ]
            if stuck:
                logger.warning("worker: no turn for %.0f s in %s; not marking it alive", STUCK_AFTER, stuck)
            else:
                metrics.worker_round_finished(time.time())
                heartbeat_beat("worker")
            await asyncio.sleep(HEARTBEAT_EVERY)

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less if the worker is asked to stop."""
        if self._stop_event is None or self._stop_event.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), timeout=seconds)

"""The worker's loop: `manage.py run_worker` runs it; one process, any number of them.

    LISTEN on every job's channel (a dedicated connection in autocommit)
    until asked to stop:
        a round: each job's run_once(), in turn
        if a round did something: another round at once
        else: sleep until the earliest next_due() of the jobs (MIN_WAIT at least), a NOTIFY
              on a channel, or IDLE_WAIT, whichever comes first

- **Wakes without polling delay**: ingest NOTIFYs a job's channel in the transaction that writes
  its rows; PostgreSQL delivers it at commit, and the worker's wait returns at once. LISTEN is in
  place before the first round, so nothing committed meanwhile is missed; IDLE_WAIT is only a
  safety net (e.g. for a listener that lost its connection).
- **Shares the work**: jobs claim rows with `FOR UPDATE SKIP LOCKED`, so workers on any hosts never
  take the same row; a worker killed mid-item loses its connection and its row locks, and the item
  is due again for the others.
- **Stops cleanly**: `stop()` (SIGTERM, SIGINT) lets the item in flight finish and be recorded,
  then the loop exits; an idle worker exits within STOP_CHECK seconds.
- **Survives errors**: a job that raises is logged and rested for ERROR_PAUSE, the others go on; a
  lost database connection is reopened on the next use.
"""

import logging
import time
from datetime import datetime

import psycopg
from django.db import connection
from django.utils import timezone
from psycopg import sql

from iothub import metrics
from iothub.worker.jobs import Job

logger = logging.getLogger(__name__)

IDLE_WAIT = 60.0  # seconds asleep at most, whatever the jobs say
# Seconds asleep at least after a round that did nothing, even if a job says something is due now:
# an item due but locked by another worker (mid-call) is due and not claimable, and must not make
# this worker spin. New work still wakes it at once through NOTIFY.
MIN_WAIT = 1.0
STOP_CHECK = 1.0  # the longest a stop request waits while the worker sleeps
ERROR_PAUSE = 5.0  # seconds a failing job rests before its next turn


class Worker:
    def __init__(self, jobs: list[Job]):
        self.jobs = jobs
        self.channels = sorted({job.channel for job in jobs if job.channel})
        self._stopping = False
        self._resting_until: dict[str, float] = {}  # job name -> monotonic time
        self._listener: psycopg.Connection | None = None

    def stop(self) -> None:
        """Ask the loop to exit after the item in flight. Safe to call from a signal handler."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def run(self) -> None:
        try:
            self._listen()
            logger.info("worker started: jobs %s, listening on %s", [j.name for j in self.jobs], self.channels)
            while not self._stopping:
                if self.run_round():
                    continue
                self._sleep(self._seconds_until_due())
        finally:
            self._close_listener()
            connection.close()
            logger.info("worker stopped")

    def run_round(self) -> int:
        """Give each job one turn; return how many items they handled together."""
        handled = 0
        for job in self.jobs:
            if self._stopping:
                break
            if self._resting_until.get(job.name, 0.0) > time.monotonic():
                continue
            try:
                handled += job.run_once()
            except Exception:
                logger.exception("job %s failed; resting it for %.0f s", job.name, ERROR_PAUSE)
                self._resting_until[job.name] = time.monotonic() + ERROR_PAUSE
                # A broken connection is replaced on its next use; a healthy one is cheap to reopen.
                connection.close()
        # Liveness for /metrics: a worker that stops finishing rounds is stuck or gone.
        metrics.worker_round_finished(time.time())
        return handled

    def _seconds_until_due(self) -> float:
        """How long to sleep after a round that did nothing: until the earliest due time of the
        jobs, at least MIN_WAIT, at most IDLE_WAIT."""
        now = time.monotonic()
        wait = IDLE_WAIT
        wall_now = timezone.now()
        for job in self.jobs:
            resting = self._resting_until.get(job.name, 0.0)
            if resting > now:
                wait = min(wait, resting - now)
                continue
            try:
                due: datetime | None = job.next_due()
            except Exception:
                logger.exception("job %s: next_due failed", job.name)
                connection.close()
                wait = min(wait, ERROR_PAUSE)
                continue
            if due is not None:
                wait = min(wait, (due - wall_now).total_seconds())
        return max(wait, MIN_WAIT)

    def _sleep(self, seconds: float) -> None:
        """Wait up to `seconds` for a notification on the channels, checking for stop meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            slice_ = min(remaining, STOP_CHECK)
            if self._listener is None:
                time.sleep(slice_)
                self._listen()
                if self._listener is not None:
                    return  # listening again: look for what was committed meanwhile
                continue
            try:
                woken = False
                # Run to its end (not broken out of): the generator holds the connection's lock.
                for _ in self._listener.notifies(timeout=slice_, stop_after=1):
                    woken = True
                if woken:
                    # Several commits may have notified; one round serves them all.
                    for _ in self._listener.notifies(timeout=0):
                        pass
                    return
            except psycopg.Error:
                logger.warning("worker: the LISTEN connection failed; reconnecting", exc_info=True)
                self._close_listener()

    def _listen(self) -> None:
        if not self.channels:
            return
        try:
            params = connection.get_connection_params()
            listener = psycopg.connect(**params, autocommit=True)
            for channel in self.channels:
                listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error:
            logger.warning("worker: cannot LISTEN yet; retrying", exc_info=True)
            self._listener = None
            return
        self._listener = listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            finally:
                self._listener = None

"""The worker's production code, driven from a test: the engine's own batch (`Lane.run_batch`,
what every lane repeats) and the whole worker loop on a thread. The tests that use them commit
(`transaction=True`): the engine works on connections of its own."""

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from iothub.outbox import Outbox
from iothub.worker.engine import Lane, database_params
from iothub.worker.jobs import PeriodicJob
from iothub.worker.loop import Worker


def send_due(outbox: Outbox, *, size: int | None = None, batches: int | None = None) -> int:
    """Run the outbox's batches of `size` (default: its concurrency) as a lane does, until one
    finds nothing due or `batches` ran; how many rows they handled."""

    async def run() -> int:
        await outbox.open()
        lane = Lane(outbox, size=size or outbox.concurrency, params=database_params())
        handled, done = 0, 0
        try:
            while batches is None or done < batches:
                found = await lane.run_batch()
                done += 1
                if not found:
                    break
                handled += found
        finally:
            await lane.close()
            await outbox.close()
        return handled

    return asyncio.run(run())


def next_due(outbox: Outbox):
    """When the outbox's earliest pending row is due, as an idle lane reads it; None if none is."""

    async def run():
        lane = Lane(outbox, size=1, params=database_params())
        try:
            return await lane.next_due()
        finally:
            await lane.close()

    return asyncio.run(run())


@contextlib.contextmanager
def running_worker(
    outboxes: list[Outbox], periodic: list[PeriodicJob] = (), batch_size: int | None = None
) -> Iterator[Worker]:
    """The worker's loop on a thread of this process, stopped (the batches in flight recorded)
    when the block ends."""
    worker = Worker(outboxes=list(outboxes), periodic=list(periodic), batch_size=batch_size)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # reported by the test, not lost on the thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the worker did not stop within 30 s"
        if failure:
            raise failure[0]


def wait_until(predicate: Callable[[], bool], *, timeout: float = 15, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)

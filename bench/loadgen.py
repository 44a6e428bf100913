"""A lean HTTP load generator for the benchmarks: raw keep-alive sockets, requests built beforehand,
responses read just far enough to know their status and length, spread over several processes.

An aiohttp client costs about a core at 5,000 requests/s, which on the two cores of the machines
here would cap what it measures; this one costs a fraction of that. Each process reports its own
CPU time, so a benchmark can say what share of the machine the load took.

    results = run(host, port, requests, clients=64, seconds=15, processes=2)           # closed loop
    results = run(host, port, requests, rate=1000, seconds=15, clients=64)             # open loop

`requests` is a list of complete HTTP/1.1 request bytes (see `post_request`), used in turn.
"""

import asyncio
import multiprocessing
import re
import resource
import statistics
import time
from dataclasses import dataclass, field

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
_COUNT = re.compile(rb'"count":\s*(\d+)')
_IDS = re.compile(rb'"id":\s*(\d+)')


def post_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Results:
    requests: int = 0
    rows: int = 0  # readings the 201s acknowledged
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds
    windows: list[list[float]] = field(default_factory=list)  # latencies per window, open loop
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of the load generator's processes
    ids: list[int] = field(default_factory=list)  # reading ids acknowledged, when asked for

    def merge(self, other: "Results") -> None:
        self.requests += other.requests
        self.rows += other.rows
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        self.latencies += other.latencies
        if other.windows:
            if not self.windows:
                self.windows = [[] for _ in other.windows]
            for mine, theirs in zip(self.windows, other.windows, strict=False):
                mine += theirs
        self.seconds = max(self.seconds, other.seconds)
        self.cpu_seconds += other.cpu_seconds
        self.ids += other.ids

    @property
    def errors(self) -> int:
        return self.requests - self.statuses.get(201, 0)

    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def percentile(self, p: float, latencies: list[float] | None = None) -> float:
        values = self.latencies if latencies is None else latencies
        if len(values) < 2:
            return float("nan")
        return statistics.quantiles(values, n=1000, method="inclusive")[round(p * 10) - 1] * 1000

    def cpu_share(self) -> float:
        """The load generator's CPU as a share of one core over the run."""
        return self.cpu_seconds / self.seconds if self.seconds else 0.0


class _Connection:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes, keep_ids: bool) -> tuple[int, int, list[int]]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(_STATUS.match(head).group(1))
        length = _LENGTH.search(head)
        body = await self.reader.readexactly(int(length.group(1))) if length else b""
        rows = 0
        ids: list[int] = []
        if status == 201:
            count = _COUNT.search(body)
            rows = int(count.group(1)) if count else 0
            if keep_ids:
                ids = [int(i) for i in _IDS.findall(body.split(b'"events"')[0])]
        return status, rows, ids


async def _connect(host: str, port: int) -> _Connection:
    reader, writer = await asyncio.open_connection(host, port)
    return _Connection(reader, writer)


async def _closed(host, port, requests, *, clients, seconds, offset, keep_ids) -> Results:
    results = Results()
    connections = [await _connect(host, port) for _ in range(clients)]
    end = time.perf_counter() + seconds

    async def client(n: int, connection: _Connection):
        i = offset + n
        while time.perf_counter() < end:
            started = time.perf_counter()
            status, rows, ids = await connection.exchange(requests[i % len(requests)], keep_ids)
            results.latencies.append(time.perf_counter() - started)
            results.requests += 1
            results.rows += rows
            results.ids += ids
            results.statuses[status] = results.statuses.get(status, 0) + 1
            i += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(n, c) for n, c in enumerate(connections)))
    results.seconds = time.perf_counter() - started
    for c in connections:
        c.writer.close()
    return results


async def _open(host, port, requests, *, rate, seconds, clients, window, offset, keep_ids) -> Results:
    """Requests due at a fixed rate, each on a free connection; latency counts from when it was due,
    so a stall of the hub is not hidden by the client waiting for it."""
    results = Results(windows=[[] for _ in range(max(1, int(seconds // window)))])
    idle = asyncio.Queue()
    for _ in range(clients):
        idle.put_nowait(await _connect(host, port))
    start = time.perf_counter()
    total = int(rate * seconds)

    async def one(n: int):
        due = start + n / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        connection = await idle.get()
        status, rows, ids = await connection.exchange(requests[(offset + n) % len(requests)], keep_ids)
        latency = time.perf_counter() - due
        idle.put_nowait(connection)
        results.latencies.append(latency)
        results.windows[min(len(results.windows) - 1, int((due - start) // window))].append(latency)
        results.requests += 1
        results.rows += rows
        results.ids += ids
        results.statuses[status] = results.statuses.get(status, 0) + 1

    await asyncio.gather(*(one(n) for n in range(total)))
    results.seconds = time.perf_counter() - start
    while not idle.empty():
        idle.get_nowait().writer.close()
    return results


def _process(args) -> Results:
    kind, host, port, requests, options = args
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is in the requirements
        pass
    before = resource.getrusage(resource.RUSAGE_SELF)
    if kind == "closed":
        results = asyncio.run(_closed(host, port, requests, **options))
    else:
        results = asyncio.run(_open(host, port, requests, **options))
    after = resource.getrusage(resource.RUSAGE_SELF)
    results.cpu_seconds = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return results


def run(
    host: str,
    port: int,
    requests: list[bytes],
    *,
    seconds: float,
    clients: int = 32,
    processes: int = 1,
    rate: float | None = None,
    window: float = 5.0,
    keep_ids: bool = False,
) -> Results:
    """Closed loop (each connection sends again when answered) or, with `rate`, open loop at that
    total rate; `clients` connections in all, spread over `processes` processes."""
    per_process = max(1, clients // processes)
    jobs = []
    for p in range(processes):
        offset = p * per_process
        if rate is None:
            options = {"clients": per_process, "seconds": seconds, "offset": offset, "keep_ids": keep_ids}
            jobs.append(("closed", host, port, requests, options))
        else:
            options = {
                "rate": rate / processes,
                "seconds": seconds,
                "clients": per_process,
                "window": window,
                "offset": offset,
                "keep_ids": keep_ids,
            }
            jobs.append(("open", host, port, requests, options))
    total = Results()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        for results in pool.map(_process, jobs):
            total.merge(results)
    return total

"""Slow and idle clients: does the hub keep answering everyone else?

    ./scripts/bench slow_clients [--sockets 200] [--seconds 10]

Starts the hub as production runs it (gunicorn.conf.py) on a scratch database with one device, then
measures the latency of ingest POSTs and of a Django route (the health check) at a fixed rate,
first alone, then while `--sockets` connections trickle a request body a byte a second and as many
more sit idle after connecting. It prints p50/p99 for both phases and their ratio. Before the hub
read requests on an event loop, six trickling sockets took every gunicorn thread and a POST waited
11-31 s.
"""

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
import uuid
from pathlib import Path

import loadgen
from ingest import bench_database_url, prepare_database, start_hub

ROOT = Path(__file__).resolve().parent.parent


def get_request(port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def measure(port: int, posts: list[bytes], gets: list[bytes], *, rate: float, seconds: float):
    results = {}

    def run(name, requests):
        results[name] = loadgen.run("127.0.0.1", port, requests, seconds=seconds, clients=16, rate=rate)

    kinds = (("ingest", posts), ("health", gets))
    threads = [threading.Thread(target=run, args=kind) for kind in kinds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


class Pests:
    """Sockets that trickle a body a byte a second, and sockets that say nothing at all."""

    def __init__(self, port: int, count: int, token: str):
        self.sockets: list[socket.socket] = []
        self.trickling: list[socket.socket] = []
        self.stop = threading.Event()
        head = (
            f"POST /api/v1/telemetry/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        ).encode()
        for _ in range(count):
            trickle = socket.create_connection(("127.0.0.1", port))
            trickle.sendall(head)
            self.trickling.append(trickle)
            self.sockets += [trickle, socket.create_connection(("127.0.0.1", port))]
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self):
        while not self.stop.wait(1.0):
            for sock in self.trickling:
                with contextlib.suppress(OSError):
                    sock.send(b" ")

    def close(self):
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=200, help="trickling sockets (as many idle ones again)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s of each kind measured")
    parser.add_argument("--port", type=int, default=8901)
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/iothub")
    env = {
        **os.environ,
        "DATABASE_URL": bench_database_url(base_url),
        "SECRET_KEY": os.environ.get("SECRET_KEY") or uuid.uuid4().hex * 2,
        "DEBUG": "false",
        "PYTHONPATH": str(ROOT),
        # Long enough that the trickling sockets stay for the whole measurement.
        "IOTHUB_HTTP_BODY_TIMEOUT_SECONDS": str(int(args.seconds * 3) + 30),
    }
    (ROOT / "var").mkdir(exist_ok=True)
    print("preparing the bench database ...", flush=True)
    ((serial, token),) = prepare_database(base_url, env, devices=1)
    body = json.dumps({"version": "0.0.1", "serial_number": serial, "metrics": {"vibration": 4.2}}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    posts = [loadgen.post_request("127.0.0.1", args.port, "/api/v1/telemetry/", body, headers)]
    gets = [get_request(args.port, "/api/v1/health/")]

    hub = start_hub(env, port=args.port, workers=None, threads=None)
    try:
        measure(args.port, posts, gets, rate=args.rate, seconds=2)  # warm-up
        alone = measure(args.port, posts, gets, rate=args.rate, seconds=args.seconds)
        pests = Pests(args.port, args.sockets, token)
        try:
            crowded = measure(args.port, posts, gets, rate=args.rate, seconds=args.seconds)
            alive = sum(1 for s in pests.trickling if s.fileno() != -1)
        finally:
            pests.close()
    finally:
        hub.stop()

    print(f"\n{args.sockets} sockets trickling a body a byte a second, {args.sockets} idle ({alive} open at the end)")
    failed = 0
    for name, ok in (("ingest", 201), ("health", 200)):
        a, c = alone[name], crowded[name]
        errors = sum(r.requests - r.statuses.get(ok, 0) for r in (a, c))
        failed += errors
        print(
            f"{name:<7} alone: p50 {a.percentile(50):6.1f} ms  p99 {a.percentile(99):6.1f} ms   "
            f"with them: p50 {c.percentile(50):6.1f} ms  p99 {c.percentile(99):6.1f} ms   "
            f"errors {errors}   p99 ratio {c.percentile(99) / a.percentile(99):.2f}"
        )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()

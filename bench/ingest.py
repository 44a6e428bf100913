"""Ingest benchmark: the hub as production runs it, loaded from a separate client process.

    ./scripts/bench ingest              # builds the environment first if needed
    ./scripts/bench ingest --rules 3    # the same with 3 rules per device

It creates (or reuses) a scratch database `iothub_bench` on the PostgreSQL at DATABASE_URL's
server, with 1,000 devices, starts gunicorn with the production settings, and measures with
concurrent keep-alive clients:

  (a) single-message POSTs per second at saturation, with p50/p99 latency;
  (a') p50/p99 latency at a fixed 200 messages/s (open loop: latency counts from the time each
       request was due, so a stall is not hidden by the client waiting);
  (b) batch POSTs of 500 messages, rows per second;
  (c) in the same run, a raw COPY of the same rows into a scratch hypertable with the same indexes:
      the physical limit of this machine;

and prints the figures with the ratios (b)/(c) and (a)/(c). It also checks that every reading the
hub acknowledged is in the table.
"""

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import psycopg

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "iothub_bench"


# --- Setup -----------------------------------------------------------------------------------------


def bench_database_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path="/" + BENCH_DB))


def admin_url(base_url: str) -> str:
    return urlunsplit(urlsplit(base_url)._replace(path="/postgres"))


def manage(*args: str, env: dict) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def prepare_database(base_url: str, env: dict, *, devices: int, rules: int) -> list[tuple[str, str]]:
    """A fresh bench database with `devices` devices (and `rules` rules each); returns
    (serial number, token) per device."""
    with psycopg.connect(admin_url(base_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    manage("migrate", env=env)
    manage("setup_timescaledb", env=env)
    script = f"""
import json
from decimal import Decimal
from iothub.devices.services import device_create, device_type_create
from iothub.rules.models import Rule
kind = device_type_create(name="vibration_sensor", metric_name="vibration", metric_unit="mm_s",
                          metric_min=Decimal("0"), metric_max=Decimal("25"))
out = []
rules = []
for n in range({devices}):
    created = device_create(device_type=kind, name=f"Bench {{n}}", serial_number=f"BENCH-{{n:05d}}",
                            location="Bench hall")
    out.append((created.device.serial_number, created.token))
    for metric, threshold in [("vibration", "24"), ("temperature", "95"), ("pressure", "9.5")][:{rules}]:
        rules.append(Rule(device=created.device, name=f"High {{metric}}", operator="gt", metric=metric,
                          threshold=Decimal(threshold), cooldown_minutes=15,
                          action_config=[{{"type": "stop_machine", "machine_id": f"M-{{n}}"}}]))
Rule.objects.bulk_create(rules)
print(json.dumps(out))
"""
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return [tuple(pair) for pair in json.loads(result.stdout.strip().splitlines()[-1])]


def reading(serial: str, at: datetime | None = None) -> dict:
    message = {
        "version": "0.0.1",
        "serial_number": serial,
        "metrics": {
            "vibration": round(random.uniform(2, 25), 2),  # rarely over the 24 threshold
            "temperature": round(random.uniform(40, 96), 1),
            "pressure": round(random.uniform(5, 9.6), 2),
            "operating_hours": random.randint(1000, 2000),
        },
    }
    if at is not None:
        message["timestamp"] = at.isoformat()
    return message


@dataclass
class Hub:
    process: subprocess.Popen
    url: str

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_hub(env: dict, *, port: int, workers: int | None, threads: int | None) -> Hub:
    log = open(ROOT / "var" / "bench-gunicorn.log", "w")  # noqa: SIM115 - lives as long as the hub
    # The production configuration (gunicorn.conf.py), sized by the same variables an operator sets.
    hub_env = {**env, "IOTHUB_PORT": str(port)}
    if workers:
        hub_env["IOTHUB_WORKERS"] = str(workers)
    if threads:
        hub_env["IOTHUB_THREADS"] = str(threads)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=hub_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(env["DATABASE_URL"]):  # the database first, then the hub
                pass
            import urllib.request

            with urllib.request.urlopen(url + "/api/v1/health/", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return Hub(process, url)
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("the hub did not start; see var/bench-gunicorn.log")


# --- Load ------------------------------------------------------------------------------------------


@dataclass
class Result:
    requests: int = 0
    rows: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def percentile(self, p: int) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000


async def post(session, url, token, body: bytes) -> tuple[int, int]:
    async with session.post(
        url + "/api/v1/telemetry/",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    ) as response:
        payload = await response.read()
        if response.status != 201:
            return response.status, 0
        return 201, json.loads(payload)["count"]


async def closed_loop(url, make_request, *, clients: int, seconds: float) -> Result:
    """`clients` connections, each sending its next request as soon as the last one answered."""
    result = Result()
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        end = time.perf_counter() + seconds

        async def client():
            while time.perf_counter() < end:
                token, body = make_request()
                started = time.perf_counter()
                status, rows = await post(session, url, token, body)
                result.latencies.append(time.perf_counter() - started)
                result.requests += 1
                result.rows += rows
                result.errors += status != 201

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        result.seconds = time.perf_counter() - started
    return result


async def open_loop(url, make_request, *, rate: float, seconds: float, clients: int) -> Result:
    """Requests due at a fixed rate; latency counts from when each was due."""
    result = Result()
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        total = int(rate * seconds)

        async def one(due: float):
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            token, body = make_request()
            status, rows = await post(session, url, token, body)
            result.latencies.append(time.perf_counter() - due)
            result.requests += 1
            result.rows += rows
            result.errors += status != 201

        await asyncio.gather(*(one(start + i / rate) for i in range(total)))
        result.seconds = time.perf_counter() - start
    return result


# --- The physical limit ----------------------------------------------------------------------------


def copy_limit(database_url: str, devices: list[str], rows: int, streams: int) -> float:
    """Rows per second of a raw COPY of `rows` readings into a scratch hypertable with the same
    key and indexes as telemetry, in `streams` parallel connections."""
    device_ids = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        device_ids = [r[0] for r in conn.execute("SELECT id FROM devices ORDER BY serial_number")]
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("CREATE SEQUENCE IF NOT EXISTS bench_copy_id_seq")
        conn.execute(
            """
            CREATE TABLE bench_copy (
                id bigint NOT NULL DEFAULT nextval('bench_copy_id_seq'),
                device_id uuid NOT NULL REFERENCES devices (id),
                "timestamp" timestamptz NOT NULL DEFAULT now(),
                payload jsonb NOT NULL,
                PRIMARY KEY (id, "timestamp")
            )
            """
        )
        conn.execute('CREATE INDEX ON bench_copy (device_id, "timestamp")')
        conn.execute("CREATE INDEX ON bench_copy USING gin (payload)")
        has_timescale = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        if has_timescale:
            conn.execute(
                "SELECT create_hypertable('bench_copy', by_range('timestamp', INTERVAL '7 days'), "
                "create_default_indexes => FALSE)"
            )
    now = datetime.now(UTC)
    per_stream = rows // streams
    prepared = []
    for s in range(streams):
        lines = []
        for n in range(per_stream):
            index = (s * per_stream + n) % len(device_ids)
            message = reading(devices[index])
            lines.append((device_ids[index], now - timedelta(milliseconds=n), json.dumps(message)))
        prepared.append(lines)

    def copy(lines):
        with psycopg.connect(database_url) as conn, conn.cursor() as cursor:
            with cursor.copy('COPY bench_copy (device_id, "timestamp", payload) FROM STDIN') as copy_in:
                for line in lines:
                    copy_in.write_row(line)
            conn.commit()

    import threading

    threads = [threading.Thread(target=copy, args=(lines,)) for lines in prepared]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE bench_copy")
    return per_stream * streams / elapsed


# --- Main ------------------------------------------------------------------------------------------


def telemetry_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM telemetry").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=0, choices=range(4), help="rules per device (0-3)")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each measurement")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients for single messages")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=200.0, help="fixed rate for the latency measurement")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--workers", type=int, help="gunicorn worker processes (default: gunicorn.conf.py's)")
    parser.add_argument("--threads", type=int, help="threads per gunicorn worker (default: gunicorn.conf.py's)")
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/iothub")
    database_url = bench_database_url(base_url)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or uuid.uuid4().hex * 2,
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DB_POOL_MIN_SIZE": str(args.threads or 2),
        "DB_POOL_MAX_SIZE": str(args.threads or 2),
        "PYTHONPATH": str(ROOT),
    }
    (ROOT / "var").mkdir(exist_ok=True)

    print(f"preparing {BENCH_DB}: {args.devices} devices, {args.rules} rule(s) each ...", flush=True)
    devices = prepare_database(base_url, env, devices=args.devices, rules=args.rules)
    serials = [serial for serial, _ in devices]

    def single():
        serial, token = random.choice(devices)
        return token, json.dumps(reading(serial)).encode()

    def batch():
        serial, token = random.choice(devices)
        now = datetime.now(UTC)
        messages = [reading(serial, now - timedelta(milliseconds=i)) for i in range(args.batch_size)]
        return token, json.dumps(messages).encode()

    # Batch bodies are built beforehand: building 500 messages is client work, not the hub's.
    batch_bodies = [batch() for _ in range(64)]
    batch_cycle = iter(range(10**9))

    def prebuilt_batch():
        return batch_bodies[next(batch_cycle) % len(batch_bodies)]

    hub = start_hub(env, port=args.port, workers=args.workers, threads=args.threads)
    sizing = f"{args.workers or 'default'} workers x {args.threads or 'default'} threads"
    print(f"hub: gunicorn -c gunicorn.conf.py, {sizing}, on {hub.url}", flush=True)
    try:
        client_cpu_start = resource.getrusage(resource.RUSAGE_SELF)
        asyncio.run(closed_loop(hub.url, single, clients=8, seconds=3))  # warm-up
        before = telemetry_count(database_url)

        a = asyncio.run(closed_loop(hub.url, single, clients=args.clients, seconds=args.seconds))
        fixed = asyncio.run(open_loop(hub.url, single, rate=args.rate, seconds=args.seconds, clients=args.clients))
        b = asyncio.run(closed_loop(hub.url, prebuilt_batch, clients=args.batch_clients, seconds=args.seconds))
        client_cpu_end = resource.getrusage(resource.RUSAGE_SELF)

        acknowledged = a.rows + fixed.rows + b.rows
        stored = telemetry_count(database_url) - before
    finally:
        hub.stop()

    c_one = copy_limit(database_url, serials, rows=max(b.rows, 50_000) // 2, streams=1)
    c_two = copy_limit(database_url, serials, rows=max(b.rows, 50_000) // 2, streams=2)
    c = max(c_one, c_two)

    client_cpu = (client_cpu_end.ru_utime + client_cpu_end.ru_stime) - (
        client_cpu_start.ru_utime + client_cpu_start.ru_stime
    )
    measured = a.seconds + fixed.seconds + b.seconds + 3
    a_rate, b_rate = a.rows / a.seconds, b.rows / b.seconds
    print()
    print(f"rules per device:                  {args.rules}")
    print(
        f"(a)  single messages, {args.clients} clients:   {a_rate:8.0f} msg/s   "
        f"p50 {a.percentile(50):6.1f} ms   p99 {a.percentile(99):6.1f} ms   errors {a.errors}"
    )
    print(
        f"(a') single messages at {args.rate:.0f}/s:     {fixed.rows / fixed.seconds:8.0f} msg/s   "
        f"p50 {fixed.percentile(50):6.1f} ms   p99 {fixed.percentile(99):6.1f} ms   errors {fixed.errors}"
    )
    print(
        f"(b)  batches of {args.batch_size}, {args.batch_clients} clients:  {b_rate:8.0f} rows/s  "
        f"p50 {b.percentile(50):6.1f} ms   p99 {b.percentile(99):6.1f} ms   errors {b.errors}"
    )
    print(f"(c)  raw COPY, same rows and indexes: {c:8.0f} rows/s  (1 stream {c_one:.0f}, 2 streams {c_two:.0f})")
    print(f"(b)/(c) = {b_rate / c:.2f}    (a)/(c) = {a_rate / c:.3f}")
    verdict = "OK" if stored == acknowledged else "LOST"
    print(f"acknowledged readings {acknowledged}, found in the table {stored}: {verdict}")
    print(f"load generator CPU: {client_cpu / measured * 100:.0f}% of one core")
    if stored != acknowledged:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

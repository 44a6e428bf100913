"""Ingest benchmark: the hub as production runs it, loaded from separate client processes.

    ./scripts/bench ingest                      # builds the environment first if needed
    ./scripts/bench ingest --rules 3            # also (a) again with 3 rules per device, and the ratio
    ./scripts/bench ingest --rules 3 --stateful # the same with stateful rules (duration, hysteresis,
                                                # auto-resolve: docs/rules.md)
    ./scripts/bench ingest --messages 1000000   # then a million more messages, hub memory sampled

It creates a scratch database `iothub_bench` on the PostgreSQL at DATABASE_URL's server, with 1,000
devices, starts gunicorn with the production settings (gunicorn.conf.py), and measures with the lean
load generator of bench/loadgen.py (raw keep-alive sockets, requests built beforehand, its own CPU
reported):

  (a)  single-message POSTs per second at saturation, 32 and 128 clients, with p50/p99 latency;
  (a') p50/p99 latency at fixed rates, 1,000 and 200 messages/s (open loop: latency counts from the
       time each request was due, so a stall is not hidden by the client waiting), with the p99 of
       each 5 s window (the disk's fsync outliers come and go);
  (b)  batch POSTs of 500 messages, rows per second;
  (r)  with --rules N: (a) again once every device has N rules (after 5 s in which they raise their
       first events and start cooling down), and the ratio to (a) without; with --stateful, rules
       with a 60 s duration, a clear threshold 5 % inside the threshold, 30 s to clear and
       auto-resolve, whose states ingest locks, judges and writes back on every batch;
  (m)  with --messages N: N more single messages, and each hub process's resident memory
       before, after and at its peak;
  (c)  in the same run, a raw COPY of the same rows into a scratch hypertable with the same
       indexes: the physical limit of this machine;

and prints the figures with the ratio (b)/(c). It also checks that every reading the hub
acknowledged is in the table, once.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import loadgen
import psycopg

ROOT = Path(__file__).resolve().parent.parent
# Its own name per checkout when several benchmark on one server: IOTHUB_BENCH_DB.
BENCH_DB = os.environ.get("IOTHUB_BENCH_DB", "iothub_bench")


# --- Setup -----------------------------------------------------------------------------------------


def bench_database_url(base_url: str, name: str = BENCH_DB) -> str:
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path="/" + name))


def admin_url(base_url: str) -> str:
    return urlunsplit(urlsplit(base_url)._replace(path="/postgres"))


def manage(*args: str, env: dict) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def fresh_database(base_url: str, name: str, env: dict) -> None:
    """The scratch database `name` dropped and made again, migrated and set up (env's DATABASE_URL
    names it)."""
    with psycopg.connect(admin_url(base_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    manage("migrate", env=env)
    manage("setup_timescaledb", env=env)


def prepare_database(base_url: str, env: dict, *, devices: int, name: str = BENCH_DB) -> list[tuple[str, str]]:
    """A fresh bench database `name` with `devices` devices; returns (serial number, token) per device."""
    fresh_database(base_url, name, env)
    script = f"""
import json
from decimal import Decimal
from iothub.devices.services import device_create, device_type_create
kind = device_type_create(name="vibration_sensor", metric_name="vibration", metric_unit="mm_s",
                          metric_min=Decimal("0"), metric_max=Decimal("25"))
out = []
for n in range({devices}):
    created = device_create(device_type=kind, name=f"Bench {{n}}", serial_number=f"BENCH-{{n:05d}}",
                            location="Bench hall")
    out.append((created.device.serial_number, created.token))
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


def start_worker(env: dict) -> subprocess.Popen:
    """`manage.py run_worker`, which rolls up the readings ingest queues (every second)."""
    log = open(ROOT / "var" / "bench-worker.log", "w")  # noqa: SIM115 - lives as long as the worker
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_worker"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


class QueueWatch:
    """Samples the roll-up queue twice a second: its largest size (batches, readings) and the age
    of its oldest batch, i.e. how far the worker's roll-ups lag behind ingest."""

    def __init__(self, database_url: str) -> None:
        import threading

        self.database_url = database_url
        self.batches = self.readings = 0
        self.age = 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def sample(self) -> tuple[int, int, float]:
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            return connection.execute(
                "SELECT count(*), coalesce(sum(cardinality(telemetry_ids)), 0), "
                "coalesce(extract(epoch FROM now() - min(queued_at)), 0)::float FROM telemetry_rollup_queue"
            ).fetchone()

    def watch(self) -> None:
        while not self.stopping.wait(0.5):
            batches, readings, age = self.sample()
            self.batches, self.readings = max(self.batches, batches), max(self.readings, readings)
            self.age = max(self.age, age)

    def drained(self, timeout: float = 300) -> float:
        """Stop sampling; wait for the worker to empty the queue; how long that took."""
        self.stopping.set()
        self.thread.join()
        started = time.perf_counter()
        while self.sample()[0] and time.perf_counter() - started < timeout:
            time.sleep(0.1)
        return time.perf_counter() - started


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


def rules_add(env: dict, count: int, *, stateful: bool = False) -> None:
    """`count` rules per device, as a plant would set them: over the bench's readings now and then,
    raising an event (and a stop_machine command) within each rule's cooldown. `stateful`: with a
    duration, hysteresis and auto-resolve, each with its state row (as the rules API makes it)."""
    options = (
        'duration_seconds=60, clear_threshold=Decimal(threshold) * Decimal("0.95"), clear_duration_seconds=30, '
        "auto_resolve=True, "
        if stateful
        else ""
    )
    script = f"""
from decimal import Decimal
from iothub.devices.models import Device
from iothub.rules.models import Rule, RuleState
rules = []
for n, device in enumerate(Device.objects.all()):
    for metric, threshold in [("vibration", "24"), ("temperature", "95"), ("pressure", "9.5")][:{count}]:
        rules.append(Rule(device=device, name=f"High {{metric}}", operator="gt", metric=metric,
                          threshold=Decimal(threshold), cooldown_minutes=15, {options}
                          action_config=[{{"type": "stop_machine", "machine_id": f"M-{{n}}"}}]))
Rule.objects.bulk_create(rules)
if {stateful!r}:
    RuleState.objects.bulk_create([RuleState(rule=rule) for rule in rules])
"""
    subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env, check=True)


def hub_rss(hub: Hub) -> dict[int, int]:
    """Resident memory of each of the hub's worker processes, in kB (gunicorn's children)."""
    rss = {}
    for child in Path(f"/proc/{hub.process.pid}/task/{hub.process.pid}/children").read_text().split():
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except FileNotFoundError:
            continue
        rss[int(child)] = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    return rss


def line(label: str, r: loadgen.Results, unit: str = "msg/s") -> str:
    return (
        f"{label:<44} {r.rate():8.0f} {unit:<6} p50 {r.percentile(50):6.1f} ms  p99 {r.percentile(99):6.1f} ms  "
        f"errors {r.errors}  (load generator {r.cpu_share() * 100:.0f}% of a core)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument(
        "--rules", type=int, default=0, choices=range(4), help="also measure (a) with N rules per device"
    )
    parser.add_argument(
        "--stateful", action="store_true", help="with --rules: duration + hysteresis + auto-resolve rules"
    )
    parser.add_argument(
        "--database", default=BENCH_DB, help=f"the scratch database, dropped and made again (default {BENCH_DB})"
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[32, 128], help="concurrent clients for (a)")
    parser.add_argument("--generators", type=int, default=2, help="load generator processes")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--rates", type=float, nargs="+", default=[1000.0, 200.0], help="fixed rates for latency")
    parser.add_argument("--messages", type=int, default=0, help="then this many more single messages, RSS sampled")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--workers", type=int, help="hub processes (default: gunicorn.conf.py's)")
    parser.add_argument("--threads", type=int, help="Django threads per process (default: gunicorn.conf.py's)")
    parser.add_argument(
        "--rollups-off",
        action="store_true",
        help="then (a) and (b) again with IOTHUB_TELEMETRY_ROLLUPS off, and the ratios on/off",
    )
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/iothub")
    if not args.database.replace("_", "").isalnum():
        parser.error("--database: letters, digits and _ only")
    database_url = bench_database_url(base_url, args.database)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or uuid.uuid4().hex * 2,
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONPATH": str(ROOT),
    }
    (ROOT / "var").mkdir(exist_ok=True)

    print(f"preparing {args.database}: {args.devices} devices ...", flush=True)
    devices = prepare_database(base_url, env, devices=args.devices, name=args.database)
    serials = [serial for serial, _ in devices]
    host, port = "127.0.0.1", args.port

    def request(token: str, body: object) -> bytes:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return loadgen.post_request(host, port, "/api/v1/telemetry/", json.dumps(body).encode(), headers)

    # Requests are built beforehand: building them is the client's work, not the hub's.
    singles = [request(token, reading(serial)) for serial, token in (random.choice(devices) for _ in range(20_000))]
    now = datetime.now(UTC)
    batches = [
        request(token, [reading(serial, now - timedelta(milliseconds=i)) for i in range(args.batch_size)])
        for serial, token in (random.choice(devices) for _ in range(64))
    ]

    hub = start_hub(env, port=port, workers=args.workers, threads=args.threads)
    worker = start_worker(env)  # it rolls up what ingest queues, on the same two cores
    watch = QueueWatch(database_url)
    print(f"hub: gunicorn -c gunicorn.conf.py, {args.workers or 'default'} processes, on {hub.url}", flush=True)
    print()
    acknowledged = 0
    try:
        loadgen.run(host, port, singles, seconds=3, clients=16)  # warm-up: connections, prepared statements
        before = telemetry_count(database_url)
        closed = {}
        for clients in args.clients:
            closed[clients] = r = loadgen.run(
                host, port, singles, seconds=args.seconds, clients=clients, processes=args.generators
            )
            acknowledged += r.rows
            print(line(f"(a)  single messages, {clients} clients", r), flush=True)
        for rate in args.rates:
            r = loadgen.run(host, port, singles, seconds=args.seconds, clients=64, rate=rate, window=5.0)
            acknowledged += r.rows
            windows = ", ".join(f"{r.percentile(99, w):.0f}" for w in r.windows if len(w) > 1)
            print(line(f"(a') single messages at a fixed {rate:.0f}/s", r), flush=True)
            print(f"{'':<44} p99 per 5 s window: {windows} ms", flush=True)
        b = loadgen.run(host, port, batches, seconds=args.seconds, clients=args.batch_clients)
        acknowledged += b.rows
        print(line(f"(b)  batches of {args.batch_size}, {args.batch_clients} clients", b, "rows/s"), flush=True)
        if args.rules:
            rules_add(env, args.rules, stateful=args.stateful)
            # Every device's rules raise their first events now, then cool down for 15 minutes, as in
            # a plant: that burst (a few thousand events at once) is not the steady state measured.
            warm = loadgen.run(host, port, singles, seconds=5, clients=args.clients[0], processes=args.generators)
            acknowledged += warm.rows
            clients = args.clients[0]
            with_rules = loadgen.run(
                host, port, singles, seconds=args.seconds, clients=clients, processes=args.generators
            )
            acknowledged += with_rules.rows
            kind = "stateful rules" if args.stateful else "rules"
            print(line(f"(r)  as (a) {clients} clients, {args.rules} {kind}/device", with_rules), flush=True)
            print(f"     with rules / without: {with_rules.rate() / closed[clients].rate():.2f}", flush=True)
        if args.messages:
            rss_before = hub_rss(hub)
            peak = dict(rss_before)
            sent = 0
            started = time.perf_counter()
            while sent < args.messages:
                r = loadgen.run(host, port, singles, seconds=10, clients=64, processes=args.generators)
                sent += r.rows
                acknowledged += r.rows
                for pid, kb in hub_rss(hub).items():
                    peak[pid] = max(peak.get(pid, 0), kb)
            rss_after = hub_rss(hub)
            print(
                f"(m)  {sent} more messages in {time.perf_counter() - started:.0f} s; RSS per hub process (MB), "
                "before / after / peak: "
                + ", ".join(
                    f"{rss_before[p] / 1024:.0f} / {rss_after.get(p, 0) / 1024:.0f} / {peak[p] / 1024:.0f}"
                    for p in rss_before
                ),
                flush=True,
            )
        stored = telemetry_count(database_url) - before
    finally:
        hub.stop()
    drain = watch.drained()
    print(
        f"     roll-up queue at most {watch.batches} batches, {watch.readings} readings, oldest {watch.age:.1f} s; "
        f"empty {drain:.1f} s after the load",
        flush=True,
    )

    if args.rollups_off:
        # The same hub without roll-ups (neither written nor read), on the same table, just after.
        hub = start_hub(
            {**env, "IOTHUB_TELEMETRY_ROLLUPS": "false"}, port=port, workers=args.workers, threads=args.threads
        )
        try:
            loadgen.run(host, port, singles, seconds=3, clients=16)
            off_before = telemetry_count(database_url)
            clients = args.clients[0]
            a_off = loadgen.run(host, port, singles, seconds=args.seconds, clients=clients, processes=args.generators)
            b_off = loadgen.run(host, port, batches, seconds=args.seconds, clients=args.batch_clients)
            off_stored = telemetry_count(database_url) - off_before
        finally:
            hub.stop()
        print(line(f"(a)  roll-ups off, {clients} clients", a_off), flush=True)
        print(line(f"(b)  roll-ups off, batches of {args.batch_size}", b_off, "rows/s"), flush=True)
        ratio_a, ratio_b = closed[clients].rate() / a_off.rate(), b.rate() / b_off.rate()
        print(f"     roll-ups on / off: (a) {ratio_a:.2f}, (b) {ratio_b:.2f}", flush=True)
        if off_stored != a_off.rows + b_off.rows:
            raise SystemExit(f"roll-ups off: acknowledged {a_off.rows + b_off.rows}, found {off_stored}")
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)

    c_one = copy_limit(database_url, serials, rows=max(b.rows, 50_000) // 2, streams=1)
    c_two = copy_limit(database_url, serials, rows=max(b.rows, 50_000) // 2, streams=2)
    c = max(c_one, c_two)
    print(f"(c)  raw COPY, same rows and indexes:       {c:8.0f} rows/s  (1 stream {c_one:.0f}, 2 streams {c_two:.0f})")
    best = max(r.rate() for r in closed.values())
    print(f"(b)/(c) = {b.rate() / c:.2f}    best (a)/(c) = {best / c:.3f}")
    verdict = "OK" if stored == acknowledged else "LOST OR DOUBLED"
    print(f"acknowledged readings {acknowledged}, found in the table {stored}: {verdict}")
    if stored != acknowledged:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

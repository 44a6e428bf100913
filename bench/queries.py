"""Read benchmark: the telemetry queries through the API of a served hub, each beside its SQL floor.

    ./scripts/bench queries                        # 10M readings (1,000 devices over 90 days) + 1 Hz
    ./scripts/bench queries --readings 1000000     # a smaller database (the 1 Hz device's days scale too)
    ./scripts/bench queries --reuse                # the database the last run built, as it is

It builds a scratch database (`iothub_bench_queries` on DATABASE_URL's server, or --database):
migrated, `setup_timescaledb` run, 1,000 devices with readings every few minutes over 90 days, and one
device sending once a second for the last 30 days (2.6M readings at the default size). The readings
are written by the database itself (`INSERT … SELECT` over `generate_series`, one day per statement,
in time order so that every device's readings interleave as live ingest leaves them), which is
faster than the ingest path or COPY and leaves the same rows; the payload GIN index and the
roll-ups (`manage.py telemetry_rollups_rebuild`) are built after.

Then it starts gunicorn with the production settings (gunicorn.conf.py) and, in the same run, times
each query through the API (HTTP on loopback, keep-alive, token auth) and the same question asked
in SQL on a warm connection (the floor), p50 and p99 of --runs runs (at least 3; runs stop after
--budget seconds):

- the spec's example query (a device's last 24 h, vibration > 15, 100 newest), ordinary device;
- raw pages: 1,000 readings of the 1 Hz device, the first page and a page ten cursors deep;
- latest values;
- aggregates of the 1 Hz device: 1 min buckets over 24 h, 1 h over 30 d, 1 d over 365 d (the SQL
  floor is the aggregation over the raw readings);
- the dashboard's 30-day view of the 1 Hz device as a browser loads it: the device page, then one
  aggregate call per chart, at once (what device-chart.js does), wall time of all;
- CSV export of the 1 Hz device's last 7 days (rows/s; floor: `COPY … TO STDOUT` of the same
  columns), and the serving processes' resident memory before and at its peak during the export.

Time windows end at the newest reading, so that a reused database answers the same questions.
"""

import argparse
import concurrent.futures
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from ingest import fresh_database, hub_rss, manage, start_hub

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE = "iothub_bench_queries"
HZ_SERIAL = "BENCH-1HZ"
PASSWORD = "bench-password"  # noqa: S105 - a scratch database's user
# The payload of bench/ingest.py: four metrics, the primary one a vibration.
PAYLOAD_SQL = """jsonb_build_object('metrics', jsonb_build_object(
    'vibration', round((2 + random() * 23)::numeric, 2),
    'temperature', round((40 + random() * 56)::numeric, 1),
    'pressure', round((5 + random() * 4.6)::numeric, 2),
    'operating_hours', 1000 + (random() * 1000)::int))"""


# --- The database -------------------------------------------------------------------------------------


def database_url(base_url: str, name: str) -> str:
    return urlunsplit(urlsplit(base_url)._replace(path="/" + name))


def build(base_url: str, name: str, env: dict, *, readings: int, devices: int, days: int, hz_days: float) -> None:
    url = database_url(base_url, name)
    fresh_database(base_url, name, env)
    script = f"""
from decimal import Decimal
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from iothub.devices.models import Device
from iothub.devices.services import device_create, device_type_create
kind = device_type_create(name="vibration_sensor", metric_name="vibration", metric_unit="mm_s",
                          metric_min=Decimal("0"), metric_max=Decimal("25"))
Device.objects.bulk_create(
    Device(device_type=kind, name=f"Bench {{n}}", serial_number=f"BENCH-{{n:05d}}", location="Bench hall")
    for n in range({devices})
)
device_create(device_type=kind, name="Bench 1 Hz", serial_number="{HZ_SERIAL}", location="Bench hall")
user = User.objects.create_superuser("bench", "bench@example.com", "{PASSWORD}")
Token.objects.create(user=user)
"""
    manage("shell", "-c", script, env=env)
    per_device_day = max(1, round(readings / devices / days))
    end = datetime.now().astimezone().replace(microsecond=0)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP INDEX IF EXISTS idx_telemetry_payload_gin")  # built once at the end: faster
        hz_id = conn.execute("SELECT id FROM devices WHERE serial_number = %s", [HZ_SERIAL]).fetchone()[0]
        total = 0
        for day in range(days, 0, -1):
            day_start = end - timedelta(days=day)
            day_end = day_start + timedelta(days=1)
            hz_from = max(day_start, end - timedelta(days=hz_days))
            # Every device every 86400/per_device_day seconds from its own phase; the 1 Hz device
            # once a second in its last hz_days; all in time order.
            inserted = conn.execute(
                f"""
                INSERT INTO telemetry (device_id, "timestamp", payload)
                SELECT device_id, at, {PAYLOAD_SQL} FROM (
                    SELECT d.id AS device_id,
                           %(start)s + (n + p.phase) * (interval '1 day' / %(per_day)s) AS at
                    FROM devices d
                    CROSS JOIN LATERAL (SELECT random() AS phase) p
                    CROSS JOIN generate_series(0, %(per_day)s - 1) n
                    WHERE d.id <> %(hz)s
                    UNION ALL
                    SELECT %(hz)s, s FROM generate_series(%(hz_from)s, %(end)s - interval '1 second',
                                                          interval '1 second') s
                    WHERE %(hz_from)s < %(end)s
                ) r
                ORDER BY at
                """,  # noqa: S608 - PAYLOAD_SQL is a constant
                {"start": day_start, "end": day_end, "per_day": per_device_day, "hz": hz_id, "hz_from": hz_from},
            ).rowcount
            total += inserted
            elapsed = time.perf_counter() - started
            print(f"  day {days - day + 1}/{days}: {total:,} readings, {total / elapsed:,.0f} rows/s", flush=True)
        conn.execute(
            """
            UPDATE devices d SET last_seen = l."timestamp", latest_metrics = (
                SELECT jsonb_object_agg(key, jsonb_build_object('value', value, 'timestamp', l."timestamp",
                                                                'telemetry_id', l.id))
                FROM jsonb_each(l.payload -> 'metrics'))
            FROM devices d2 CROSS JOIN LATERAL (
                SELECT id, "timestamp", payload FROM telemetry t WHERE t.device_id = d2.id
                ORDER BY "timestamp" DESC LIMIT 1) l
            WHERE d.id = d2.id
            """
        )
    print(f"  loaded {total:,} readings in {time.perf_counter() - started:.0f} s; building indexes ...", flush=True)
    manage("setup_timescaledb", env=env)  # the GIN index again
    # Rows written in SQL bypass ingest's roll-up queue: the roll-ups are built from them here.
    rollups_started = time.perf_counter()
    manage("telemetry_rollups_rebuild", env=env)
    print(f"  roll-ups built in {time.perf_counter() - rollups_started:.0f} s", flush=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE telemetry")
        conn.execute("VACUUM ANALYZE devices")
    print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)


# --- Device-ordered chunks ---------------------------------------------------------------------------


def reorder(db, env: dict, ordinary, hz, end: datetime) -> None:
    """The worker's task (`telemetry_reorder_chunks`) on every closed chunk, while another connection
    reads an ordinary device's day in the oldest chunk and inserts a reading into the open chunk,
    every 50 ms: their slowest answers say how long the reorder held either up."""
    probe = psycopg.connect(db.info.dsn, autocommit=True)
    oldest = db.execute(
        "SELECT range_start FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry' "
        "ORDER BY range_start LIMIT 1"
    ).fetchone()[0]
    reads, inserts = [], []
    script = "from iothub.telemetry.chunks import telemetry_reorder_chunks; print(telemetry_reorder_chunks())"
    started = time.perf_counter()
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    while worker.poll() is None:
        t = time.perf_counter()
        probe.execute(
            'SELECT count(*) FROM telemetry WHERE device_id = %s AND "timestamp" >= %s AND "timestamp" < %s',
            [ordinary, oldest + timedelta(days=2), oldest + timedelta(days=3)],
        ).fetchone()
        reads.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        probe.execute(
            """INSERT INTO telemetry (device_id, "timestamp", payload) VALUES (%s, %s, '{"metrics": {}}')""",
            [hz, end + timedelta(seconds=len(inserts) + 1)],
        )
        inserts.append((time.perf_counter() - t) * 1000)
        time.sleep(0.05)
    done = worker.stdout.read().split()[-1]  # the shell may say more before the task's answer
    probe.execute('DELETE FROM telemetry WHERE device_id = %s AND "timestamp" > %s', [hz, end])
    probe.close()
    print(
        f"reordered {done} closed chunks in {time.perf_counter() - started:.0f} s; meanwhile, reads of a day in the "
        f"oldest chunk p50 {statistics.median(reads):.1f} ms, slowest {max(reads):.0f} ms; inserts into the open chunk "
        f"p50 {statistics.median(inserts):.1f} ms, slowest {max(inserts):.0f} ms ({len(reads)} of each)",
        flush=True,
    )


def pages_per_week(db, device, end: datetime) -> None:
    """How many heap pages hold an ordinary device's readings of one week: in the newest chunk
    (arrival order) and in the closed chunk of 30 days before (reordered or not)."""
    for label, at in (("newest", end - timedelta(days=1)), ("30 days before", end - timedelta(days=30))):
        chunk, reordered = db.execute(
            "SELECT format('%%I.%%I', chunk_schema, chunk_name), "
            "obj_description(format('%%I.%%I', chunk_schema, chunk_name)::regclass, 'pg_class') IS NOT NULL "
            "FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry' "
            "AND range_start <= %s AND %s < range_end",
            [at, at],
        ).fetchone()
        readings, pages = db.execute(
            f"SELECT count(*), count(DISTINCT (ctid::text::point)[0]) FROM {chunk} WHERE device_id = %s",  # noqa: S608
            [device],
        ).fetchone()
        state = "reordered" if reordered else "in arrival order"
        print(f"an ordinary device in the {label} chunk ({state}): {readings:,} readings on {pages:,} pages")


# --- Measuring ----------------------------------------------------------------------------------------


@dataclass
class Timing:
    label: str
    api: list[float]
    sql: list[float]

    @staticmethod
    def pct(values: list[float], p: int) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def row(self) -> str:
        a50, a99, s50, s99 = (self.pct(v, p) for v in (self.api, self.sql) for p in (50, 99))
        over = a50 - s50
        return (
            f"| {self.label} | {a50:.1f} | {a99:.1f} | {s50:.1f} | {s99:.1f} | {a50 / s50:.1f}x | "
            f"{over:+.1f} | {len(self.api)} |"
        )


def repeat(call, *, runs: int, budget: float) -> list[float]:
    call()  # warm: the connection, the plan, the pages
    times = []
    started = time.perf_counter()
    while len(times) < runs and (len(times) < 3 or time.perf_counter() - started < budget):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    return times


AGGREGATE_SQL = """
    SELECT time_bucket(%(bucket)s, "timestamp", '2000-01-03T00:00:00+00:00'::timestamptz) AS bucket, {columns}
    FROM (
        SELECT "timestamp", (payload -> 'metrics' -> %(metric)s)::numeric AS value
        FROM telemetry
        WHERE device_id = %(device)s AND "timestamp" >= %(start)s AND "timestamp" < %(end)s
          AND payload -> 'metrics' ? %(metric)s
          AND jsonb_typeof(payload -> 'metrics' -> %(metric)s) = 'number'
    ) AS readings
    GROUP BY 1 ORDER BY 1
"""


def aggregate_sql(aggregates: str) -> str:
    return AGGREGATE_SQL.format(columns=", ".join(f"{name}(value)" for name in aggregates.split(",")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=10_000_000, help="readings of the ordinary devices")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--hz-days", type=float, help="days of the 1 Hz device (default 30, scaled by --readings)")
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--reuse", action="store_true", help="measure the database built before, as it is")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per query and side, at most")
    parser.add_argument("--export-days", type=float, default=7.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8093)
    parser.add_argument(
        "--reorder",
        action="store_true",
        help="first reorder the closed chunks as the worker does, timing reads and inserts meanwhile",
    )
    args = parser.parse_args()
    hz_days = args.hz_days if args.hz_days is not None else 30 * min(1.0, args.readings / 10_000_000)

    base_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/iothub")
    url = database_url(base_url, args.database)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or uuid.uuid4().hex * 2,
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "WARNING",
    }
    (ROOT / "var").mkdir(exist_ok=True)
    if not args.reuse:
        print(
            f"building {args.database}: {args.readings:,} readings of {args.devices} devices over {args.days} days, "
            f"one device at 1 Hz for {hz_days:g} days ...",
            flush=True,
        )
        build(
            base_url, args.database, env, readings=args.readings, devices=args.devices, days=args.days, hz_days=hz_days
        )

    db = psycopg.connect(url, autocommit=True)
    token = db.execute("SELECT key FROM authtoken_token").fetchone()[0]
    hz = db.execute("SELECT id FROM devices WHERE serial_number = %s", [HZ_SERIAL]).fetchone()[0]
    ordinary = db.execute("SELECT id FROM devices WHERE serial_number = 'BENCH-00000'").fetchone()[0]
    end = db.execute('SELECT max("timestamp") FROM telemetry WHERE device_id = %s', [hz]).fetchone()[0]
    end += timedelta(seconds=1)
    rows, chunks = db.execute(
        "SELECT (SELECT reltuples::bigint FROM pg_class WHERE oid = 'telemetry'::regclass) + "
        "(SELECT coalesce(sum(c.reltuples), 0)::bigint FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'telemetry'::regclass), "
        "(SELECT count(*) FROM pg_inherits WHERE inhparent = 'telemetry'::regclass)"
    ).fetchone()
    hz_rows = db.execute("SELECT count(*) FROM telemetry WHERE device_id = %s", [hz]).fetchone()[0]
    print(f"database {args.database}: ~{rows:,} readings in {chunks} chunks; the 1 Hz device {hz_rows:,}", flush=True)

    if args.reorder:
        reorder(db, env, ordinary, hz, end)
    pages_per_week(db, ordinary, end)

    hub = start_hub(env, port=args.port, workers=args.workers, threads=None)
    print(f"hub: gunicorn -c gunicorn.conf.py, {args.workers} processes, on {hub.url}", flush=True)
    client = httpx.Client(base_url=hub.url, headers={"Authorization": f"Token {token}"}, timeout=600)
    results: list[Timing] = []

    def api(path: str, params: dict | None = None):
        def call():
            response = client.get(path, params=params)
            response.raise_for_status()
            return response

        return call

    def sql(query: str, params=None):
        return lambda: db.execute(query, params).fetchall()

    def measure(label: str, api_call, sql_call) -> Timing:
        timing = Timing(
            label,
            repeat(api_call, runs=args.runs, budget=args.budget),
            repeat(sql_call, runs=args.runs, budget=args.budget),
        )
        results.append(timing)
        print("  " + timing.row(), flush=True)
        return timing

    def iso(at: datetime) -> str:
        return at.isoformat()

    day = timedelta(days=1)
    telemetry = "/api/v1/devices/{}/telemetry/"
    try:
        print("\n| query | API p50 ms | API p99 ms | SQL p50 ms | SQL p99 ms | API/SQL | over (ms) | runs |")
        print("|---|---|---|---|---|---|---|---|")
        measure(
            "spec's example: ordinary device, 24 h, vibration > 15, 100 newest",
            api(
                telemetry.format(ordinary),
                {"from": iso(end - day), "to": iso(end), "metric": "vibration", "gt": "15", "page_size": 100},
            ),
            sql(
                """SELECT t."timestamp", t.payload, d.name FROM telemetry t JOIN devices d ON t.device_id = d.id
                   WHERE t.device_id = %s AND t."timestamp" >= %s AND t."timestamp" < %s
                     AND t.payload @? '$.metrics."vibration" ? (@ > 15)'
                   ORDER BY t."timestamp" DESC LIMIT 100""",
                [ordinary, end - day, end],
            ),
        )
        page = {"from": iso(end - day), "to": iso(end), "page_size": 1000}
        measure(
            "raw page: 1 Hz device, 1,000 newest of 24 h",
            api(telemetry.format(hz), page),
            sql(
                'SELECT id, "timestamp", payload FROM telemetry WHERE device_id = %s AND "timestamp" >= %s '
                'AND "timestamp" < %s ORDER BY "timestamp" DESC, id DESC LIMIT 1001',
                [hz, end - day, end],
            ),
        )
        next_url = telemetry.format(hz) + "?" + str(httpx.QueryParams(page))
        for _ in range(10):
            next_url = client.get(next_url).json()["next"]
        deep = db.execute(
            'SELECT "timestamp", id FROM telemetry WHERE device_id = %s AND "timestamp" >= %s AND "timestamp" < %s '
            'ORDER BY "timestamp" DESC, id DESC OFFSET 9999 LIMIT 1',
            [hz, end - day, end],
        ).fetchone()
        measure(
            "raw page: the same, ten cursors deep",
            api(next_url),
            sql(
                'SELECT id, "timestamp", payload FROM telemetry WHERE device_id = %s AND "timestamp" >= %s '
                'AND ("timestamp", id) < (%s, %s) ORDER BY "timestamp" DESC, id DESC LIMIT 1001',
                [hz, end - day, *deep],
            ),
        )
        measure(
            "latest values",
            api(telemetry.format(hz) + "latest/"),
            sql("SELECT id, last_seen, latest_metrics FROM devices WHERE id = %s", [hz]),
        )
        for bucket, span in (("1m", day), ("1h", 30 * day), ("1d", 365 * day)):
            interval = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": day}[bucket]
            measure(
                f"aggregate {bucket} / {span.days * 24} h, 1 Hz device"
                if span == day
                else f"aggregate {bucket} / {span.days} d, 1 Hz device",
                api(
                    telemetry.format(hz) + "aggregate/",
                    {"metric": "vibration", "bucket": bucket, "from": iso(end - span), "to": iso(end)},
                ),
                sql(
                    aggregate_sql("avg,min,max,count,sum"),
                    {"bucket": interval, "metric": "vibration", "device": hz, "start": end - span, "end": end},
                ),
            )
        measure("dashboard 30-day view (page + its charts at once)", *dashboard(hub.url, hz, end, db, url))
        exported = export(client, db, hub, hz, end, args)
    finally:
        client.close()
        hub.stop()
        db.close()
    print("\n| query | API p50 ms | API p99 ms | SQL p50 ms | SQL p99 ms | API/SQL | over (ms) | runs |")
    print("|---|---|---|---|---|---|---|---|")
    for timing in results:
        print(timing.row())
    print()
    for line in exported:
        print(line)


def dashboard(hub_url: str, device, end: datetime, db, url: str):
    """The device page as a logged-in browser loads it, then the aggregate calls its script makes,
    concurrently; the floor: the same aggregations in SQL on as many connections at once."""
    browser = httpx.Client(base_url=hub_url, timeout=600, follow_redirects=True)
    login = browser.get("/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)[1]
    browser.post(
        "/login/",
        data={"username": "bench", "password": PASSWORD, "csrfmiddlewaretoken": csrf},
        headers={"Referer": hub_url + "/login/"},
    ).raise_for_status()
    start = end - timedelta(days=30)
    pool = concurrent.futures.ThreadPoolExecutor(8)

    def charts_of(page_html: str) -> list[str]:
        found = re.search(r'<script id="chart-config" type="application/json">(.*?)</script>', page_html, re.S)
        config = json.loads(found[1])
        return config["aggregateUrl"], [chart["metric"] for chart in config["charts"]]

    def load():
        page = browser.get(f"/devices/{device}/?range=30d")
        page.raise_for_status()
        aggregate_url, metrics = charts_of(page.text)
        params = {"from": start.isoformat(), "to": end.isoformat(), "agg": "avg,min,max,count"}
        answers = pool.map(lambda m: browser.get(aggregate_url, params={"metric": m, **params}), metrics)
        for answer in answers:
            answer.raise_for_status()
        return metrics

    metrics = load()
    connections = [psycopg.connect(url, autocommit=True) for _ in metrics]
    query = aggregate_sql("avg,min,max,count")

    def floor():
        list(
            pool.map(
                lambda pair: (
                    pair[0]
                    .execute(
                        query,
                        {"bucket": timedelta(hours=3), "metric": pair[1], "device": device, "start": start, "end": end},
                    )
                    .fetchall()
                ),
                zip(connections, metrics, strict=True),
            )
        )

    print(f"  (the dashboard's device page draws {len(metrics)} charts: {', '.join(metrics)})", flush=True)
    return load, floor


def export(client, db, hub, device, end: datetime, args) -> list[str]:
    """CSV export rows per second, the hub's against COPY's, and the hub's memory meanwhile."""
    start = end - timedelta(days=args.export_days)
    metrics = ["vibration", "operating_hours", "pressure", "temperature"]
    peak: dict[int, int] = {}
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            for pid, kb in hub_rss(hub).items():
                peak[pid] = max(peak.get(pid, 0), kb)
            time.sleep(0.05)

    def via_api() -> int:
        lines = 0
        with client.stream(
            "GET",
            f"/api/v1/devices/{device}/telemetry/export/",
            params={"from": start.isoformat(), "to": end.isoformat()},
        ) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                lines += chunk.count(b"\n")
        return lines - 1

    def via_copy() -> int:
        columns = ", ".join(f"payload -> 'metrics' ->> '{m}'" for m in metrics)
        lines = 0
        with db.cursor().copy(
            f"""COPY (SELECT "timestamp", id, {columns} FROM telemetry WHERE device_id = '{device}'
                AND "timestamp" >= '{start.isoformat()}' AND "timestamp" < '{end.isoformat()}'
                ORDER BY "timestamp", id) TO STDOUT (FORMAT csv)"""  # noqa: S608 - our own values
        ) as copy:
            for chunk in copy:
                lines += bytes(chunk).count(b"\n")
        return lines

    before = hub_rss(hub)
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    rates = {"api": [], "sql": []}
    rows = 0
    for _ in range(3):
        for side, call in (("api", via_api), ("sql", via_copy)):
            t = time.perf_counter()
            rows = call()
            rates[side].append(rows / (time.perf_counter() - t))
    sampling.set()
    watcher.join()
    api_rate, sql_rate = statistics.median(rates["api"]), statistics.median(rates["sql"])
    lines = [
        f"CSV export, {args.export_days:g} days of the 1 Hz device ({rows:,} rows): API {api_rate:,.0f} rows/s, "
        f"COPY TO STDOUT {sql_rate:,.0f} rows/s, API/COPY {api_rate / sql_rate:.2f} (median of 3)",
        "hub processes' resident memory (MB), before the export / peak during it: "
        + ", ".join(f"{before[p] / 1024:.0f} / {peak.get(p, 0) / 1024:.0f}" for p in before),
    ]
    for line in lines:
        print("  " + line, flush=True)
    return lines


if __name__ == "__main__":
    main()

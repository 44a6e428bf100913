"""Roll-ups benchmark: the aggregates of a 1 Hz device read through the API from roll-ups, against
the raw SQL aggregation of the same readings, in the same run.

    ./scripts/bench rollups                  # 30 days at 1 Hz (2.6M readings), then 335 more days
                                             # at one reading a minute, so that 365 days are covered
    ./scripts/bench rollups --days 7         # smaller
    ./scripts/bench rollups --keep           # reuse the scratch database of a previous run

It creates a scratch database (`IOTHUB_BENCH_DB`, default `iothub_rollups_bench`) on the server of
DATABASE_URL, one device with three metrics, its readings written in SQL (readings of one device
only, so the raw SQL reads fewer pages than a real, interleaved table: the raw baseline is a
favourable one), then the roll-ups with `manage.py telemetry_rollups_rebuild`. It reports p50/p99
of:

  - aggregate 1 h / 30 d and 1 d / 365 d through the API (DRF's view in this process, a user's
    token), the range ending now (so its edges are open: minutes and raw readings are read there);
  - the same queries as raw SQL aggregation (the pre-roll-up statement) and the ratio;
  - the dashboard's 30-day view: its three aggregate calls (one per metric), one after the other;
  - the two aggregates again with the worker behind (`--queued-minutes`, 1, 10 and 60 by default):
    the device's last minutes queued for roll-up, one batch per reading, which the aggregates read
    from the queue; then how long the worker takes to roll them up.

The older readings (beyond the 1 Hz days) are one a minute: the 1 d / 365 d answer reads the same
hourly roll-ups either way; only its open edge at the start holds fewer raw readings.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = os.environ.get("IOTHUB_BENCH_DB", "iothub_rollups_bench")
METRICS = ("vibration", "temperature", "pressure")

RAW_SQL = """
SELECT time_bucket(%(bucket)s::interval, "timestamp", '2000-01-03T00:00:00+00:00'::timestamptz) AS bucket,
       avg(value), min(value), max(value), count(value)
FROM (
    SELECT "timestamp", (payload -> 'metrics' -> %(metric)s)::numeric AS value
    FROM telemetry
    WHERE device_id = %(device_id)s AND "timestamp" >= %(start)s AND "timestamp" < %(end)s
      AND payload -> 'metrics' ? %(metric)s
      AND jsonb_typeof(payload -> 'metrics' -> %(metric)s) = 'number'
) AS readings
GROUP BY 1 ORDER BY 1
"""


# Readings of the one device, every `step` from `first` to `last`, with three random metrics.
INSERT_SQL = """
INSERT INTO telemetry (device_id, "timestamp", payload)
SELECT d.id, g, jsonb_build_object('version', '0.0.1', 'serial_number', 'HZ-1', 'metrics', jsonb_build_object(
    'vibration', round((random() * 25)::numeric, 2),
    'temperature', round((40 + random() * 60)::numeric, 1),
    'pressure', round((5 + random() * 5)::numeric, 2)))
FROM devices AS d, generate_series(%(first)s::timestamptz, %(last)s::timestamptz, %(step)s::interval) AS g
"""


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def manage(*args: str, env: dict) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout


def prepare(base_url: str, env: dict, *, days: int, year_days: int) -> None:
    with psycopg.connect(with_database(base_url, "postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    manage("migrate", env=env)
    manage("setup_timescaledb", env=env)
    started = time.perf_counter()
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO device_types (id, name, metric_name, metric_unit) "
            "VALUES (gen_random_uuid(), 'vibration_sensor', 'vibration', 'mm_s')"
        )
        conn.execute(
            "INSERT INTO devices (id, device_type_id, name, serial_number, status, latest_metrics) "
            "SELECT gen_random_uuid(), id, 'One hertz', 'HZ-1', 'active', "
            """'{"temperature": {"value": 1}, "pressure": {"value": 1}}' FROM device_types"""
        )
        # Day by day, so that each statement stays in one or two chunks.
        anchor = conn.execute("SELECT now()").fetchone()[0]
        for day in range(year_days, 0, -1):
            first = anchor - timedelta(days=day)
            conn.execute(
                INSERT_SQL,
                {
                    "first": first,
                    "last": first + timedelta(days=1, microseconds=-1),
                    "step": "1 second" if day <= days else "1 minute",
                },
            )
        rows = conn.execute("SELECT count(*) FROM telemetry").fetchone()[0]
        conn.execute("VACUUM ANALYZE telemetry")
    print(f"readings written in SQL: {rows} in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    print(manage("telemetry_rollups_rebuild", env=env).strip(), f"in {time.perf_counter() - started:.0f} s")
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE telemetry_rollups")


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def timed(call, repeat: int) -> list[float]:
    call()  # warm: the connection, the plan cache, the pages
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def measure(args) -> None:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.db import connection, transaction
    from django.utils import timezone
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from iothub.devices.models import Device

    device = Device.objects.get(serial_number="HZ-1")
    user = User.objects.filter(username="bench").first() or User.objects.create_superuser("bench", "b@example.com")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    url = f"/api/v1/devices/{device.id}/telemetry/aggregate/"
    now = timezone.now()

    def api(metric: str, days: int, bucket: str | None):
        params = {"metric": metric, "from": (now - timedelta(days=days)).isoformat(), "to": now.isoformat()}
        if bucket:
            params["bucket"] = bucket
        params["agg"] = "avg,min,max,count"
        response = client.get(url, params)
        if response.status_code != 200:
            raise SystemExit(f"{response.status_code}: {response.content[:300]!r}")
        return response.json()

    def raw(metric: str, days: int, bucket: str):
        with connection.cursor() as cursor:
            cursor.execute(
                RAW_SQL,
                {
                    "bucket": bucket,
                    "metric": metric,
                    "device_id": device.id,
                    "start": now - timedelta(days=days),
                    "end": now,
                },
            )
            return cursor.fetchall()

    print(f"{'query':<36} {'API p50':>9} {'API p99':>9} {'raw SQL p50':>12}  ratio  target")
    for label, days, bucket, interval, target in [
        ("aggregate 1 h / 30 d", min(30, args.days), "1h", "1 hour", 50),
        ("aggregate 1 d / 365 d", args.year_days, "1d", "1 day", 100),
    ]:
        api_p50, api_p99 = percentiles(timed(lambda d=days, b=bucket: api("vibration", d, b), args.repeat))
        raw_p50, _ = percentiles(timed(lambda d=days, i=interval: raw("vibration", d, i), args.raw_repeat))
        check = "OK" if api_p50 < target and api_p50 <= raw_p50 / 10 else "MISSED"
        print(
            f"{label:<36} {api_p50:7.1f}ms {api_p99:7.1f}ms {raw_p50:10.1f}ms  {api_p50 / raw_p50:5.3f}  "
            f"p50 < {target} ms and <= 1/10 raw: {check}",
            flush=True,
        )

    def dashboard():
        for metric in METRICS:  # the page's three charts; the browser sends them at once
            api(metric, min(30, args.days), None)

    p50, p99 = percentiles(timed(dashboard, args.repeat))
    print(
        f"{'dashboard 30-day view, 3 charts':<36} {p50:7.1f}ms {p99:7.1f}ms {'':>12}         "
        f"< 300 ms: {'OK' if p50 < 300 else 'MISSED'}"
    )

    # The worker behind: the device's last minutes queued, one batch per reading (a 1 Hz device
    # sending single messages), and their roll-ups rebuilt without them (the rebuild leaves queued
    # readings out), so that the answers stay exact while the aggregates read them from the queue.
    from iothub.telemetry.services import telemetry_rollups_process, telemetry_rollups_rebuild

    for minutes in args.queued_minutes:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO telemetry_rollup_queue (telemetry_ids, device_ids, first_timestamp, last_timestamp) "
                'SELECT ARRAY[id], ARRAY[device_id], "timestamp", "timestamp" FROM telemetry '
                'WHERE device_id = %s AND "timestamp" >= %s ORDER BY "timestamp"',
                [device.id, now - timedelta(minutes=minutes)],
            )
            queued = cursor.rowcount
        with transaction.atomic():
            telemetry_rollups_rebuild(device_id=device.id, start=now - timedelta(minutes=minutes), end=now)
        for label, days, bucket in [("1 h / 30 d", min(30, args.days), "1h"), ("1 d / 365 d", args.year_days, "1d")]:
            p50, p99 = percentiles(timed(lambda d=days, b=bucket: api("vibration", d, b), args.repeat))
            print(f"{f'aggregate {label}, {queued} batches queued':<36} {p50:7.1f}ms {p99:7.1f}ms", flush=True)
        started = time.perf_counter()
        while telemetry_rollups_process():
            pass
        print(f"     the worker rolled them up in {(time.perf_counter() - started) * 1000:.0f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30, help="days of 1 Hz readings, ending now")
    parser.add_argument("--year-days", type=int, default=365, help="days covered in all (older: one a minute)")
    parser.add_argument("--repeat", type=int, default=30, help="samples of each API query")
    parser.add_argument("--raw-repeat", type=int, default=3, help="samples of each raw SQL aggregation")
    parser.add_argument(
        "--queued-minutes",
        type=lambda text: [int(m) for m in text.split(",")],
        default=[1, 10, 60],
        help="then again with the device's last minutes queued for the worker (comma-separated)",
    )
    parser.add_argument("--keep", action="store_true", help="reuse the database of a previous run")
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/iothub")
    env = {
        **os.environ,
        "DATABASE_URL": with_database(base_url, BENCH_DB),
        "SECRET_KEY": os.environ.get("SECRET_KEY") or uuid.uuid4().hex * 2,
        "DJANGO_SETTINGS_MODULE": "iothub.settings",
        "ALLOWED_HOSTS": "testserver",
        "LOG_LEVEL": "WARNING",  # not a line per request on the terminal
        "PYTHONPATH": str(ROOT),
    }
    if not args.keep:
        print(f"preparing {BENCH_DB}: {args.days} days at 1 Hz, {args.year_days} days in all ...", flush=True)
        prepare(base_url, env, days=args.days, year_days=args.year_days)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    measure(args)


if __name__ == "__main__":
    main()

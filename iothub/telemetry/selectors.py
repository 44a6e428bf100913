"""Reads of telemetry: raw ranges, time-bucketed aggregates, rows for export.

Every query is bounded by one device and a time range, so it is served by the spec's
`idx_telemetry_device_time` index and, on TimescaleDB, by chunk exclusion.
"""

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal
from uuid import UUID

from django.db import connection
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL

from iothub.telemetry.models import Telemetry
from iothub.telemetry.timescale import timescale_enabled

METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
COMPARISONS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "==", "neq": "!="}
AGGREGATES = ("avg", "min", "max", "count", "sum")
# time_bucket's default origin for sub-month buckets (a Monday); date_bin gets the same one so
# that both engines put every reading in the same bucket.
BUCKET_ORIGIN = "2000-01-03T00:00:00+00:00"
MAX_BUCKETS = 10_000


def metric_path(metric: str, comparisons: dict[str, Decimal] | None = None) -> str:
    """A jsonpath for "the reading has this metric (and its value passes these comparisons)".

    `payload @? <path>` is the form the payload's GIN index can serve. (The spec's example
    `payload @> '{"metrics": {"vibration": {}}}'` matches no numeric reading: a number does not
    contain an empty object.) The metric name is checked against METRIC_NAME before it gets here,
    and the numbers are Decimals, so nothing from a request reaches the path unescaped.
    """
    if not METRIC_NAME.fullmatch(metric):
        raise ValueError(f"invalid metric name {metric!r}")
    path = f'$.metrics."{metric}"'
    if comparisons:
        condition = " && ".join(f"@ {COMPARISONS[op]} {value}" for op, value in comparisons.items())
        path += f" ? ({condition})"
    return path


def telemetry_range(
    *,
    device_id: UUID,
    start: datetime,
    end: datetime,
    metric: str | None = None,
    comparisons: dict[str, Decimal] | None = None,
) -> QuerySet[Telemetry]:
    """A device's readings with start <= timestamp < end, optionally only those carrying `metric`
    (whose value passes `comparisons`). Unordered: the caller orders and paginates."""
    queryset = Telemetry.objects.filter(device_id=device_id, timestamp__gte=start, timestamp__lt=end)
    if metric:
        queryset = queryset.filter(
            RawSQL("payload @? %s::jsonpath", [metric_path(metric, comparisons)], output_field=BooleanField())
        )
    return queryset


@dataclass(frozen=True)
class Bucket:
    start: datetime
    values: dict[str, float | int | None]


def _json_number(value: Decimal | int | None) -> float | int | None:
    """An aggregate as a JSON number: a double, or None beyond double's range (±1.8e308), which
    only readings written past the ingest's bound can reach."""
    if value is None or isinstance(value, int):
        return value
    number = float(value)
    return number if math.isfinite(number) else None


def telemetry_aggregate(
    *,
    device_id: UUID,
    metric: str,
    bucket: timedelta,
    start: datetime,
    end: datetime,
    aggregates: Sequence[str] = AGGREGATES,
    engine: Literal["time_bucket", "date_bin"] | None = None,
) -> list[Bucket]:
    """Time-bucketed aggregates of one metric: `time_bucket` on TimescaleDB, `date_bin` on plain
    PostgreSQL (same origin, same answers). Empty buckets are left out.

    Computed in `numeric`, exactly: PostgreSQL's `avg` of `double precision` keeps a running sum
    of squares that overflows (an error) on readings of about 1e154 and more, which rows from
    before the ingest's bound, or written in SQL, may hold. JSON's number is `numeric` already,
    so reading it as such is also cheaper than through text to `double precision`."""
    if not METRIC_NAME.fullmatch(metric):
        raise ValueError(f"invalid metric name {metric!r}")
    unknown = set(aggregates) - set(AGGREGATES)
    if unknown:
        raise ValueError(f"unknown aggregates {sorted(unknown)}")
    if engine is None:
        engine = "time_bucket" if timescale_enabled() else "date_bin"
    if engine == "time_bucket":
        bucket_sql = 'time_bucket(%(bucket)s, "timestamp", %(origin)s::timestamptz)'
    else:
        bucket_sql = 'date_bin(%(bucket)s, "timestamp", %(origin)s::timestamptz)'
    # The aggregate names come from AGGREGATES above, never from the request.
    columns = ", ".join(f"{name}(value)" for name in aggregates)
    sql = f"""
        SELECT {bucket_sql} AS bucket, {columns}
        FROM (
            SELECT "timestamp", (payload -> 'metrics' -> %(metric)s)::numeric AS value
            FROM telemetry
            WHERE device_id = %(device_id)s AND "timestamp" >= %(start)s AND "timestamp" < %(end)s
              AND payload -> 'metrics' ? %(metric)s
              AND jsonb_typeof(payload -> 'metrics' -> %(metric)s) = 'number'
        ) AS readings
        GROUP BY 1
        ORDER BY 1
    """  # noqa: S608
    params = {
        "bucket": bucket,
        "origin": BUCKET_ORIGIN,
        "metric": metric,
        "device_id": device_id,
        "start": start,
        "end": end,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [
            Bucket(start=row[0], values={name: _json_number(v) for name, v in zip(aggregates, row[1:], strict=True)})
            for row in cursor
        ]


def telemetry_export_csv(
    *, device_id: UUID, start: datetime, end: datetime, metrics: Sequence[str], block_size: int = 64 * 1024
) -> Iterator[bytes]:
    """A device's readings as CSV lines, oldest first: `timestamp, telemetry id, the value of each
    metric` (empty where a reading lacks it), in blocks of about `block_size` bytes.

    PostgreSQL writes the lines itself (`COPY … TO STDOUT`, streamed: constant memory for any
    range), so nothing is decoded or formatted in Python. Timestamps are ISO 8601 in UTC (the
    connection's time zone), numbers exactly as stored."""
    for metric in metrics:
        if not METRIC_NAME.fullmatch(metric):
            raise ValueError(f"invalid metric name {metric!r}")
    values = "".join(", payload -> 'metrics' ->> %s" for _ in metrics)
    sql = f"""
        COPY (
            SELECT to_json("timestamp") #>> '{{}}', id{values}
            FROM telemetry
            WHERE device_id = %s AND "timestamp" >= %s AND "timestamp" < %s
            ORDER BY "timestamp", id
        ) TO STDOUT (FORMAT csv)
    """  # noqa: S608 - placeholders only
    with connection.cursor() as cursor, cursor.cursor.copy(sql, [*metrics, device_id, start, end]) as copy:
        block = bytearray()
        for data in copy:
            block += data
            if len(block) >= block_size:
                yield bytes(block)
                block.clear()
        if block:
            yield bytes(block)

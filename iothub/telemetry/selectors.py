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

from django.conf import settings
from django.db import connection
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL

from iothub.telemetry.models import Telemetry
from iothub.telemetry.services import BUCKET_ORIGIN, ROLLUP_SIZES
from iothub.telemetry.timescale import timescale_enabled

METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
COMPARISONS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "==", "neq": "!="}
AGGREGATES = ("avg", "min", "max", "count", "sum")
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


@dataclass(frozen=True)
class Piece:
    """A part of an aggregate's range, read from the roll-ups of `size` (aligned on the origin),
    or from raw readings when `size` is None."""

    start: datetime
    end: datetime
    size: timedelta | None = None


def _floor(moment: datetime, size: timedelta) -> datetime:
    origin = datetime.fromisoformat(BUCKET_ORIGIN)
    return origin + ((moment - origin) // size) * size


def aggregate_pieces(*, start: datetime, end: datetime, bucket: timedelta, sizes: Sequence[int]) -> list[Piece]:
    """How to read [start, end) in buckets of `bucket`: the coarsest roll-up that answers a stretch
    exactly (its size divides the bucket, so each bucket is a union of whole roll-up buckets, on
    the same origin), the next finer one for what it leaves at either end, and raw readings only
    for the open edges that no roll-up covers whole."""
    usable = sorted(
        (timedelta(seconds=size) for size in sizes if bucket % timedelta(seconds=size) == timedelta(0)),
        reverse=True,
    )

    def split(lo: datetime, hi: datetime, levels: list[timedelta]) -> list[Piece]:
        if lo >= hi:
            return []
        if not levels:
            return [Piece(lo, hi)]
        size, finer = levels[0], levels[1:]
        first = _floor(lo, size)
        if first < lo:
            first += size
        last = _floor(hi, size)
        if first >= last:
            return split(lo, hi, finer)
        return [*split(lo, first, finer), Piece(first, last, size), *split(last, hi, finer)]

    return split(start, end, usable)


# One reading or one roll-up row per line, in the same shape: (time, count, sum, min, max).
_RAW_PIECE_SQL = """
SELECT "timestamp" AS at, 1::bigint AS n, value AS total, value AS lo, value AS hi
FROM (
    SELECT "timestamp", (payload -> 'metrics' -> %(metric)s)::numeric AS value
    FROM telemetry
    WHERE device_id = %(device_id)s AND "timestamp" >= %(start_{i})s AND "timestamp" < %(end_{i})s
      AND payload -> 'metrics' ? %(metric)s
      AND jsonb_typeof(payload -> 'metrics' -> %(metric)s) = 'number'
) AS readings_{i}
"""
_ROLLUP_PIECE_SQL = """
SELECT bucket AS at, count AS n, sum AS total, min AS lo, max AS hi
FROM telemetry_rollups
WHERE device_id = %(device_id)s AND metric = %(metric)s AND bucket_seconds = %(size_{i})s
  AND bucket >= %(start_{i})s AND bucket < %(end_{i})s
"""
# The readings of the roll-ups' span that the worker has not rolled up yet: found by id from the
# queue's batches of this device (a small table: the queue of the last seconds), never by scanning
# the device's range.
_QUEUED_PIECE_SQL = """
SELECT "timestamp" AS at, 1::bigint AS n, value AS total, value AS lo, value AS hi
FROM (
    SELECT t."timestamp", (t.payload -> 'metrics' -> %(metric)s)::numeric AS value
    FROM (
        SELECT unnest(telemetry_ids) AS id FROM telemetry_rollup_queue
        WHERE %(device_id)s = ANY(device_ids)
          AND last_timestamp >= %(queued_start)s AND first_timestamp < %(queued_end)s
    ) AS q
    JOIN telemetry AS t ON t.id = q.id
    WHERE t.device_id = %(device_id)s AND t."timestamp" >= %(queued_start)s AND t."timestamp" < %(queued_end)s
      AND t.payload -> 'metrics' ? %(metric)s
      AND jsonb_typeof(t.payload -> 'metrics' -> %(metric)s) = 'number'
) AS queued
"""
# avg is sum / count in `numeric`, exactly what PostgreSQL's avg(numeric) computes (numeric_avg
# divides the same sum by the same count), so it is the same number whichever parts answer it.
_AGGREGATE_SQL = {
    "avg": "sum(total) / sum(n)",
    "min": "min(lo)",
    "max": "max(hi)",
    "count": "sum(n)::bigint",
    "sum": "sum(total)",
}


def telemetry_aggregate(
    *,
    device_id: UUID,
    metric: str,
    bucket: timedelta,
    start: datetime,
    end: datetime,
    aggregates: Sequence[str] = AGGREGATES,
    engine: Literal["time_bucket", "date_bin"] | None = None,
    rollups: bool | None = None,
) -> list[Bucket]:
    """Time-bucketed aggregates of one metric: `time_bucket` on TimescaleDB, `date_bin` on plain
    PostgreSQL (same origin, same answers). Empty buckets are left out.

    Read from the roll-ups where they answer exactly (`aggregate_pieces`), plus the readings there
    still queued for the worker, and from raw readings elsewhere, in one statement (one snapshot:
    the worker deletes a batch from the queue in the transaction that adds it to the roll-ups, so
    each reading is counted once, whatever the worker's lag). `rollups=False` reads raw readings only (the setting
    IOTHUB_TELEMETRY_ROLLUPS decides by default); the answers are the same.

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
    if rollups is None:
        rollups = settings.IOTHUB_TELEMETRY_ROLLUPS
    pieces = aggregate_pieces(start=start, end=end, bucket=bucket, sizes=ROLLUP_SIZES if rollups else ())
    params: dict = {"bucket": bucket, "origin": BUCKET_ORIGIN, "metric": metric, "device_id": device_id}
    parts = []
    for i, piece in enumerate(pieces):
        params[f"start_{i}"], params[f"end_{i}"] = piece.start, piece.end
        if piece.size is None:
            parts.append(_RAW_PIECE_SQL.format(i=i))
        else:
            params[f"size_{i}"] = int(piece.size.total_seconds())
            parts.append(_ROLLUP_PIECE_SQL.format(i=i))
    rolled_up = [piece for piece in pieces if piece.size is not None]
    if rolled_up:
        # The roll-up pieces are contiguous (raw readings only at the open edges).
        params["queued_start"], params["queued_end"] = rolled_up[0].start, rolled_up[-1].end
        parts.append(_QUEUED_PIECE_SQL)
    bucket_function = "time_bucket" if engine == "time_bucket" else "date_bin"
    # The aggregate names come from AGGREGATES above, never from the request.
    columns = ", ".join(_AGGREGATE_SQL[name] for name in aggregates)
    sql = f"""
        SELECT {bucket_function}(%(bucket)s, at, %(origin)s::timestamptz) AS bucket, {columns}
        FROM ({" UNION ALL ".join(parts)}) AS parts
        GROUP BY 1
        ORDER BY 1
    """  # noqa: S608
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

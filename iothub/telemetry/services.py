"""Writes to telemetry, and readings as the flows pass them around: validated (new) and stored.

The telemetry table is written here and nowhere else: ingest hands over the readings of a whole
batch (any number of devices) and gets their ids back.
"""

import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple
from uuid import UUID

import orjson
from django.conf import settings
from django.db import connection, transaction

from iothub.db import execute_prepared


# Named tuples rather than frozen dataclasses: a batch makes thousands of them, and a tuple is made
# in a fraction of a frozen dataclass's time (whose __init__ sets each field through object.__setattr__).
class NewReading(NamedTuple):
    """A validated reading, ready to store. `payload` is the message as the spec stores it."""

    timestamp: datetime
    payload: dict

    @property
    def metrics(self) -> dict[str, int | float]:
        return self.payload["metrics"]


class StoredReading(NamedTuple):
    """A reading as stored: the row's id and timestamp, and what it carried."""

    id: int
    timestamp: datetime
    payload: dict

    @property
    def metrics(self) -> dict[str, int | float]:
        return self.payload["metrics"]


# The rows go in as one JSON document, `[[device_id, timestamp, payload], ...]`, in the order given,
# so that a batch of any size costs one statement and one round trip, and one orjson call to encode
# (array parameters cost psycopg a quoting pass per element, more than the insert itself). Ids are
# drawn from the sequence in that order, so sorting the returned ids puts them back in that order.
_STORED_CTE = """
stored AS (
    INSERT INTO telemetry (device_id, "timestamp", payload)
    SELECT (r.row ->> 0)::uuid, (r.row ->> 1)::timestamptz, r.row -> 2
    FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS r(row, n)
    ORDER BY r.n
    RETURNING id, device_id, "timestamp", payload
)"""
_INSERT_SQL = f"WITH {_STORED_CTE} SELECT id FROM stored"  # noqa: S608 (constants only)

# The roll-ups (`TelemetryRollup`, docs/telemetry.md): every numeric metric of the stored rows,
# per device, metric and bucket of each size, aggregated within the batch, then added to the
# bucket's row. The last reading of a bucket is the one of the greatest (timestamp, id): an array
# compares element by element, so `max(ARRAY[epoch, id, value])` finds it in the same pass.
#
# Written by the worker (`telemetry_rollups_process`) and the rebuild, never by ingest. The rows are
# written sorted by their key, so two transactions that share rows take them in the same order and
# wait for each other rather than deadlock. The foreign key to `devices` takes only KEY SHARE on
# device rows, which neither chunk creation nor ingest's FOR NO KEY UPDATE of the device rows
# waits for.
ROLLUP_SIZES = (60, 3600)
# time_bucket's default origin for sub-month buckets (a Monday); date_bin gets the same one so
# that both engines, and the roll-ups, put every reading in the same bucket.
BUCKET_ORIGIN = "2000-01-03T00:00:00+00:00"
ROLLUP_UPSERT = """
INSERT INTO telemetry_rollups AS t (
    device_id, metric, bucket_seconds, bucket, count, sum, min, max, last, last_timestamp, last_telemetry_id
)
SELECT device_id, metric, seconds, bucket, count(*), sum(value), min(value), max(value),
       (max(ARRAY[epoch, id, value]))[3], max("timestamp"), (max(ARRAY[epoch, id, value]))[2]::bigint
FROM (
    SELECT s.device_id, m.key AS metric, z.seconds,
           date_bin(make_interval(secs => z.seconds), s."timestamp", '{origin}'::timestamptz) AS bucket,
           s.id, s."timestamp", extract(epoch FROM s."timestamp") AS epoch, m.value::numeric AS value
    FROM {source} AS s
    CROSS JOIN LATERAL jsonb_each(s.payload -> 'metrics') AS m
    CROSS JOIN unnest(ARRAY{sizes}) AS z(seconds)
    -- Names beyond 64 characters (ingest refuses them; SQL may write them) cannot be asked for.
    WHERE jsonb_typeof(m.value) = 'number' AND char_length(m.key) <= 64{where}
) AS readings
GROUP BY device_id, metric, seconds, bucket
ORDER BY device_id, metric, seconds, bucket
ON CONFLICT (device_id, metric, bucket_seconds, bucket) DO UPDATE SET
    count = t.count + EXCLUDED.count,
    sum = t.sum + EXCLUDED.sum,
    min = LEAST(t.min, EXCLUDED.min),
    max = GREATEST(t.max, EXCLUDED.max),
    last = CASE WHEN (EXCLUDED.last_timestamp, EXCLUDED.last_telemetry_id) > (t.last_timestamp, t.last_telemetry_id)
                THEN EXCLUDED.last ELSE t.last END,
    last_telemetry_id = CASE WHEN (EXCLUDED.last_timestamp, EXCLUDED.last_telemetry_id)
                                  > (t.last_timestamp, t.last_telemetry_id)
                             THEN EXCLUDED.last_telemetry_id ELSE t.last_telemetry_id END,
    last_timestamp = GREATEST(t.last_timestamp, EXCLUDED.last_timestamp)
"""


def rollup_upsert_sql(*, source: str, where: str = "") -> str:
    """The roll-up upsert over the rows of `source` (a table or CTE with telemetry's columns),
    restricted by `where` (an SQL condition on `s`, written by this module, never from input)."""
    return ROLLUP_UPSERT.format(
        origin=BUCKET_ORIGIN, sizes=list(ROLLUP_SIZES), source=source, where=f" AND {where}" if where else ""
    )


# With roll-ups on, the readings' statement also queues the batch for the worker: one row of the
# batch's telemetry ids, its devices and the span of its timestamps (`TelemetryRollupQueue`). A
# plain insert, after every telemetry row of the statement (the aggregate consumes all of `stored`
# first), on a table no other statement of ingest's transaction touches: no row another writer
# waits for, so ingest's lock order (docs/ingest.md) is unchanged.
_INSERT_QUEUED_SQL = f"""
WITH {_STORED_CTE}, queued AS (
    INSERT INTO telemetry_rollup_queue (telemetry_ids, device_ids, first_timestamp, last_timestamp)
    SELECT array_agg(id), array_agg(DISTINCT device_id), min("timestamp"), max("timestamp") FROM stored
    HAVING count(*) > 0  -- a batch of replays only stores nothing, and queues nothing
)
SELECT id FROM stored
"""  # noqa: S608 (constants only)


def telemetry_insert(*, rows: Sequence[tuple[UUID, NewReading]]) -> list[StoredReading]:
    """Insert readings of one or many devices, `(device_id, reading)` each, in one statement, inside
    the caller's transaction; returns them as stored, in the order given.

    It writes the telemetry table and, in the same statement, queues the batch for the roll-ups
    (unless IOTHUB_TELEMETRY_ROLLUPS is off), after the rows: callers that also update `devices`
    do so in a statement of their own, after this one (see `iothub.ingest.services` for why the
    order matters). The worker rolls the queue up (`telemetry_rollups_process`).
    """
    # In UTC: the instant is the same, and an offset PostgreSQL cannot parse (beyond ±15:59) never
    # reaches it.
    timestamps = [reading.timestamp.astimezone(UTC) for _, reading in rows]
    document = orjson.dumps(
        [
            (device_id, timestamp, reading.payload)
            for (device_id, reading), timestamp in zip(rows, timestamps, strict=True)
        ]
    )
    sql = _INSERT_QUEUED_SQL if settings.IOTHUB_TELEMETRY_ROLLUPS else _INSERT_SQL
    ids = sorted(row[0] for row in execute_prepared(sql, {"rows": document.decode()}))
    if len(ids) != len(rows):
        raise AssertionError(f"inserted {len(ids)} telemetry rows for {len(rows)} readings")
    return [
        StoredReading(id=row_id, timestamp=timestamp, payload=reading.payload)
        for row_id, timestamp, (_, reading) in zip(ids, timestamps, rows, strict=True)
    ]


# Rebuilt ranges are widened to whole hours, so that they hold whole buckets of every size.
_HOUR_START = "date_bin('1 hour', %(start)s::timestamptz, %(origin)s::timestamptz)"
_HOUR_END = (
    "date_bin('1 hour', %(end)s::timestamptz - interval '1 microsecond', %(origin)s::timestamptz) + interval '1 hour'"
)


def _rebuild_conditions(*, device: str, time: str, device_id, start, end) -> str:
    conditions = ["TRUE"]
    if device_id is not None:
        conditions.append(f"{device} = %(device_id)s")
    if start is not None:
        conditions.append(f"{time} >= {_HOUR_START}")
    if end is not None:
        conditions.append(f"{time} < {_HOUR_END}")
    return " AND ".join(conditions)


def telemetry_rollups_rebuild(
    *, device_id: UUID | None = None, start: datetime | None = None, end: datetime | None = None
) -> int:
    """Compute the roll-ups again from the readings, for one device or all, over [start, end)
    widened to whole hours (all of time by default); returns the number of roll-up rows written.

    Ingest's queue and the worker keep the roll-ups current; this is for rows the hub did not
    write (SQL written directly, a restore) and for turning IOTHUB_TELEMETRY_ROLLUPS on again.
    Readings still queued are left to the worker. Inside a transaction (required: the command's),
    readers see the old roll-ups or the new ones, never a mix."""
    params = {"device_id": device_id, "start": start, "end": end, "origin": BUCKET_ORIGIN}
    bounds = {"device_id": device_id, "start": start, "end": end}
    with connection.cursor() as cursor:
        rollups = _rebuild_conditions(device="device_id", time="bucket", **bounds)
        # No roll-up pass runs meanwhile (they wait), and the readings still queued are left to
        # the passes after this transaction: each reading is counted once, by one or the other,
        # while ingest goes on.
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ROLLUP_LOCK])
        cursor.execute(f"DELETE FROM telemetry_rollups WHERE {rollups}", params)  # noqa: S608
        readings = _rebuild_conditions(device="s.device_id", time='s."timestamp"', **bounds)
        readings += " AND s.id NOT IN (SELECT unnest(telemetry_ids) FROM telemetry_rollup_queue)"
        cursor.execute(rollup_upsert_sql(source="telemetry", where=readings), params)
        return cursor.rowcount


# Roll-up passes take this advisory lock shared (several workers may roll up at once: they claim
# different queue rows); the rebuild and retention take it exclusively, so that no pass writes
# roll-ups from readings they are deleting or counting.
ROLLUP_LOCK = zlib.crc32(b"iothub.telemetry.rollups")
ROLLUP_QUEUE_CLAIM = 1000

# The claimed batches' readings, found by id (the primary key's index of each chunk) within the
# span of their timestamps (constants, so that TimescaleDB reads only the chunks of that span).
# Readings that retention or a device's deletion removed meanwhile are simply not found.
_QUEUED_READINGS = """(
    SELECT t.id, t.device_id, t."timestamp", t.payload
    FROM (SELECT unnest(telemetry_ids) AS id FROM telemetry_rollup_queue WHERE id = ANY(%(claimed)s)) AS q
    JOIN telemetry AS t ON t.id = q.id
    WHERE t."timestamp" >= %(first)s AND t."timestamp" <= %(last)s
)"""


def telemetry_rollups_process(*, limit: int = ROLLUP_QUEUE_CLAIM) -> int:
    """Roll up the oldest queued batches (at most `limit`) and delete them from the queue, in one
    transaction; returns how many batches. Queue rows another worker has claimed are skipped.

    A bucket's row is written once per pass however many of the batches have readings in it (a
    1 Hz device's minute once, not sixty times). Readers see the readings either queued or in the
    roll-ups, never both nor neither (`iothub.telemetry.selectors`)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [ROLLUP_LOCK])
        cursor.execute(
            "SELECT id, first_timestamp, last_timestamp FROM telemetry_rollup_queue "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            [limit],
        )
        claimed = cursor.fetchall()
        if not claimed:
            return 0
        params = {
            "claimed": [row[0] for row in claimed],
            "first": min(row[1] for row in claimed),
            "last": max(row[2] for row in claimed),
        }
        cursor.execute(rollup_upsert_sql(source=_QUEUED_READINGS), params)
        cursor.execute("DELETE FROM telemetry_rollup_queue WHERE id = ANY(%(claimed)s)", params)
        return len(claimed)

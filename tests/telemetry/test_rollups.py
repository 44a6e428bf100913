"""Roll-ups: queued by ingest in the readings' transaction, rolled up by the worker, trimmed by
retention, and read by the aggregates, whose answers equal the raw computation exactly, whatever
the order the readings came in (late ones, batches of many devices' readings), whatever retention
dropped, and whatever the worker has rolled up yet (queue full, partly drained, drained).

The reference is the aggregate as it was computed before roll-ups existed: `avg`, `min`, `max`,
`count`, `sum` of the raw readings in `numeric`, bucketed by `time_bucket`.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iothub.devices.services import device_create
from iothub.ingest.services import telemetry_ingest
from iothub.telemetry.selectors import AGGREGATES, BUCKET_ORIGIN, aggregate_pieces, telemetry_aggregate
from iothub.telemetry.services import (
    NewReading,
    telemetry_insert,
    telemetry_rollups_process,
    telemetry_rollups_rebuild,
)
from iothub.telemetry.timescale import telemetry_apply_retention

pytestmark = pytest.mark.django_db

# A Monday at midnight: the readings span three weeks from here, across chunks of 7 days.
BASE = datetime(2026, 3, 2, tzinfo=UTC)
SPAN = timedelta(days=21)
METRICS = ("vibration", "temperature")
BUCKETS = [timedelta(seconds=s) for s in (30, 60, 90, 300, 3600, 10800, 86400, 7 * 86400)]

RAW_SQL = """
SELECT time_bucket(%(bucket)s, "timestamp", %(origin)s::timestamptz) AS bucket,
       avg(value), min(value), max(value), count(value), sum(value)
FROM (
    SELECT "timestamp", (payload -> 'metrics' -> %(metric)s)::numeric AS value
    FROM telemetry
    WHERE device_id = %(device_id)s AND "timestamp" >= %(start)s AND "timestamp" < %(end)s
      AND payload -> 'metrics' ? %(metric)s
) AS readings
GROUP BY 1 ORDER BY 1
"""

# Each roll-up row against its bucket's readings, the last one by (timestamp, id).
ROLLUPS_VS_RAW_SQL = """
WITH raw AS (
    SELECT t.device_id, m.key AS metric, z.seconds,
           date_bin(make_interval(secs => z.seconds), t."timestamp", %(origin)s::timestamptz) AS bucket,
           count(*) AS count, sum(m.value::numeric) AS sum, min(m.value::numeric) AS min,
           max(m.value::numeric) AS max,
           (array_agg(m.value::numeric ORDER BY t."timestamp" DESC, t.id DESC))[1] AS last,
           max(t."timestamp") AS last_timestamp,
           (array_agg(t.id ORDER BY t."timestamp" DESC, t.id DESC))[1] AS last_telemetry_id
    FROM telemetry AS t
    CROSS JOIN jsonb_each(t.payload -> 'metrics') AS m
    CROSS JOIN (VALUES (60), (3600)) AS z(seconds)
    GROUP BY 1, 2, 3, 4
)
SELECT count(*) FROM raw FULL JOIN telemetry_rollups AS r
    ON (r.device_id, r.metric, r.bucket_seconds, r.bucket) = (raw.device_id, raw.metric, raw.seconds, raw.bucket)
WHERE (r.count, r.sum, r.min, r.max, r.last, r.last_timestamp, r.last_telemetry_id)
      IS DISTINCT FROM (raw.count, raw.sum, raw.min, raw.max, raw.last, raw.last_timestamp, raw.last_telemetry_id)
"""


def raw_aggregate(*, device_id, metric, bucket, start, end) -> list[tuple]:
    params = {"bucket": bucket, "origin": BUCKET_ORIGIN, "metric": metric, "device_id": device_id}
    with connection.cursor() as cursor:
        cursor.execute(RAW_SQL, {**params, "start": start, "end": end})
        return [
            (row[0], {"avg": float(avg), "min": float(low), "max": float(high), "count": count, "sum": float(total)})
            for row in cursor
            for avg, low, high, count, total in [row[1:]]
        ]


def queued_batches() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM telemetry_rollup_queue")
        return cursor.fetchone()[0]


def drain() -> None:
    telemetry_rollups_process()
    assert queued_batches() == 0


def aggregate(**query) -> list[tuple]:
    return [(b.start, b.values) for b in telemetry_aggregate(**query, aggregates=AGGREGATES)]


def mismatched_rollups() -> int:
    with connection.cursor() as cursor:
        cursor.execute(ROLLUPS_VS_RAW_SQL, {"origin": BUCKET_ORIGIN})
        return cursor.fetchone()[0]


@pytest.fixture
def devices(device, vibration_type):
    other = device_create(device_type=vibration_type, name="Press 4", serial_number="VIB-SN-002").device
    return [device, other]


def store(device, readings: list[tuple[datetime, dict]]) -> None:
    telemetry_ingest(device=device, readings=[NewReading(at, {"version": "0.0.1", "metrics": m}) for at, m in readings])


# --- Strategies ----------------------------------------------------------------------------------

# Times cluster on a few minutes and hours (so that buckets get several readings, some on the same
# instant) and on chunk and bucket boundaries, with microseconds.
moments = st.one_of(
    st.integers(0, int(SPAN.total_seconds() * 1000)).map(lambda ms: BASE + timedelta(milliseconds=ms)),
    st.tuples(st.integers(0, 20), st.integers(-3000, 3000), st.sampled_from([0, 60, 3600, 86400])).map(
        lambda t: BASE + timedelta(hours=t[0] * 25, seconds=t[2]) + timedelta(milliseconds=t[1])
    ),
)
values = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False).map(float),
)
readings = st.tuples(
    moments,
    st.dictionaries(st.sampled_from(METRICS), values, min_size=1, max_size=2),
)
# A batch: readings of one device in any order (late ones among them), or of both devices.
batches = st.tuples(st.sampled_from([0, 1]), st.lists(readings, min_size=1, max_size=25))
queries = st.tuples(
    st.sampled_from(BUCKETS),
    st.sampled_from(METRICS),
    st.one_of(moments, st.integers(0, 21 * 24).map(lambda h: BASE + timedelta(hours=h))),
    st.one_of(moments, st.integers(0, 21 * 24).map(lambda h: BASE + timedelta(hours=h))),
)


def assert_aggregates_equal_raw(devices, asked) -> None:
    for bucket, metric, one, other in asked:
        if one == other:
            continue
        start, end = min(one, other), max(one, other)
        for device in devices:
            query = {"device_id": device.id, "metric": metric, "bucket": bucket, "start": start, "end": end}
            assert aggregate(**query) == raw_aggregate(**query)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.lists(batches, min_size=1, max_size=5),
    rolled_before=st.integers(0, 5),
    retention_at=st.one_of(st.none(), st.integers(0, 21)),
    after=st.lists(batches, max_size=3),
    rolled_after=st.integers(1, 7),
    asked=st.lists(queries, min_size=1, max_size=6),
)
def test_aggregates_from_rollups_equal_the_raw_computation(
    devices, before, rolled_before, retention_at, after, rolled_after, asked, settings
):
    settings.IOTHUB_TELEMETRY_RETENTION_DAYS = 30
    with transaction.atomic():
        for index, batch in before:
            store(devices[index], batch)
        assert queued_batches() == len(before)
        # The worker rolls up the oldest batches (maybe none) before retention and the late ones.
        telemetry_rollups_process(limit=rolled_before)
        if retention_at is not None:
            with connection.cursor() as cursor:
                # The deferred foreign-key checks of these rows are owed at commit; a chunk with
                # pending checks cannot be dropped.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            telemetry_apply_retention(now=BASE + timedelta(days=retention_at + 30))
        for index, batch in after:  # late readings, below the retention cutoff too
            store(devices[index], batch)

        # Queued readings counted where the worker has not rolled them up yet...
        assert_aggregates_equal_raw(devices, asked)
        # ...and not again once it has, after a pass or two (batches of retained and dropped readings).
        telemetry_rollups_process(limit=rolled_after)
        assert_aggregates_equal_raw(devices, asked)
        drain()
        assert mismatched_rollups() == 0
        assert_aggregates_equal_raw(devices, asked)
        transaction.set_rollback(True)


def test_readings_are_counted_from_the_queue_until_the_worker_rolls_them_up(devices):
    store(devices[0], [(BASE + timedelta(seconds=s), {"vibration": s}) for s in (5, 10, 3700)])
    query = {
        "device_id": devices[0].id,
        "metric": "vibration",
        "bucket": timedelta(hours=1),
        "start": BASE,
        "end": BASE + timedelta(hours=2),
    }
    expected = [
        (BASE, {"avg": 7.5, "min": 5.0, "max": 10.0, "count": 2, "sum": 15.0}),
        (BASE + timedelta(hours=1), {"avg": 3700.0, "min": 3700.0, "max": 3700.0, "count": 1, "sum": 3700.0}),
    ]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM telemetry_rollups")
        assert cursor.fetchone()[0] == 0  # nothing rolled up on the request path
    assert queued_batches() == 1
    assert aggregate(**query) == expected

    assert telemetry_rollups_process() == 1

    assert queued_batches() == 0
    assert aggregate(**query) == expected
    assert mismatched_rollups() == 0


def test_the_worker_rolls_up_many_batches_into_one_write_per_bucket(devices):
    for second in range(5):
        store(devices[0], [(BASE + timedelta(seconds=second), {"vibration": second})])
    assert queued_batches() == 5

    assert telemetry_rollups_process(limit=3) == 3  # the oldest first
    with connection.cursor() as cursor:
        cursor.execute("SELECT bucket_seconds, count, sum FROM telemetry_rollups ORDER BY 1")
        assert cursor.fetchall() == [(60, 3, Decimal(3)), (3600, 3, Decimal(3))]
    drain()
    assert mismatched_rollups() == 0


def test_queued_readings_that_retention_dropped_are_not_found(devices, settings):
    settings.IOTHUB_TELEMETRY_RETENTION_DAYS = 30
    store(devices[0], [(BASE + timedelta(days=1), {"vibration": 1})])
    store(devices[0], [(BASE + timedelta(days=15), {"vibration": 2})])
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    telemetry_apply_retention(now=BASE + timedelta(days=40.5))

    drain()

    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT bucket::date FROM telemetry_rollups ORDER BY 1")
        assert [row[0] for row in cursor] == [(BASE + timedelta(days=15)).date()]
    assert mismatched_rollups() == 0


def test_rebuild_leaves_the_queued_readings_to_the_worker(devices):
    store(devices[0], [(BASE, {"vibration": 1})])
    drain()
    store(devices[0], [(BASE + timedelta(seconds=1), {"vibration": 2})])  # queued

    telemetry_rollups_rebuild(device_id=devices[0].id)

    assert mismatched_rollups() == 2  # the queued reading is not in the minute nor the hour yet
    query = {"device_id": devices[0].id, "metric": "vibration", "bucket": timedelta(hours=1)}
    assert aggregate(**query, start=BASE, end=BASE + timedelta(hours=1)) == [
        (BASE, {"avg": 1.5, "min": 1.0, "max": 2.0, "count": 2, "sum": 3.0})
    ]
    drain()
    assert mismatched_rollups() == 0


def test_an_empty_batch_queues_nothing():
    assert telemetry_insert(rows=[]) == []  # what a batch of idempotent replays stores
    assert queued_batches() == 0


def test_without_rollups_ingest_queues_nothing(devices, settings):
    settings.IOTHUB_TELEMETRY_ROLLUPS = False
    store(devices[0], [(BASE, {"vibration": 1})])
    assert queued_batches() == 0


def test_a_batch_of_many_buckets_and_devices_adds_to_the_rollups_it_touches(devices):
    store(devices[0], [(BASE + timedelta(seconds=s), {"vibration": s}) for s in (5, 10, 70)])
    store(devices[1], [(BASE + timedelta(seconds=20), {"vibration": 1.5})])
    store(devices[0], [(BASE + timedelta(seconds=1), {"vibration": -2})])  # late: earlier than the others
    drain()

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT bucket_seconds, bucket, count, sum, min, max, last FROM telemetry_rollups "
            "WHERE device_id = %s ORDER BY 1, 2",
            [devices[0].id],
        )
        rows = cursor.fetchall()
    assert rows == [
        (60, BASE, 3, Decimal(13), Decimal(-2), Decimal(10), Decimal(10)),
        (60, BASE + timedelta(minutes=1), 1, Decimal(70), Decimal(70), Decimal(70), Decimal(70)),
        (3600, BASE, 4, Decimal(83), Decimal(-2), Decimal(70), Decimal(70)),
    ]
    assert mismatched_rollups() == 0


def test_an_hourly_aggregate_over_whole_hours_reads_only_rollups():
    pieces = aggregate_pieces(start=BASE, end=BASE + timedelta(days=30), bucket=timedelta(hours=1), sizes=(60, 3600))
    assert [(p.size, p.start, p.end) for p in pieces] == [(timedelta(hours=1), BASE, BASE + timedelta(days=30))]


def test_an_open_edge_is_read_from_minutes_then_raw_readings():
    start = BASE + timedelta(minutes=7, seconds=30)
    end = BASE + timedelta(days=2, minutes=3, seconds=1)

    pieces = aggregate_pieces(start=start, end=end, bucket=timedelta(hours=3), sizes=(60, 3600))

    assert [(p.size, p.start, p.end) for p in pieces] == [
        (None, start, BASE + timedelta(minutes=8)),
        (timedelta(minutes=1), BASE + timedelta(minutes=8), BASE + timedelta(hours=1)),
        (timedelta(hours=1), BASE + timedelta(hours=1), BASE + timedelta(days=2)),
        (timedelta(minutes=1), BASE + timedelta(days=2), BASE + timedelta(days=2, minutes=3)),
        (None, BASE + timedelta(days=2, minutes=3), end),
    ]


def test_a_bucket_that_no_rollup_divides_is_read_from_raw_readings():
    pieces = aggregate_pieces(start=BASE, end=BASE + timedelta(days=1), bucket=timedelta(seconds=90), sizes=(60, 3600))
    assert [(p.size, p.start, p.end) for p in pieces] == [(None, BASE, BASE + timedelta(days=1))]


def test_retention_drops_the_rollups_of_the_dropped_chunks_only(devices, settings):
    settings.IOTHUB_TELEMETRY_RETENTION_DAYS = 30
    store(devices[0], [(BASE + timedelta(days=d), {"vibration": d}) for d in (1, 8, 15)])
    drain()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")

    telemetry_apply_retention(now=BASE + timedelta(days=40.5))  # the cutoff: BASE + 10.5 days

    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT bucket::date FROM telemetry_rollups ORDER BY 1")
        kept = [row[0] for row in cursor]
    assert kept == [(BASE + timedelta(days=15)).date()]
    assert mismatched_rollups() == 0


def test_rebuild_counts_readings_written_in_sql(devices):
    store(devices[0], [(BASE, {"vibration": 1})])
    drain()
    with connection.cursor() as cursor:
        cursor.execute(
            'INSERT INTO telemetry (device_id, "timestamp", payload) VALUES (%s, %s, %s)',
            [devices[0].id, BASE + timedelta(seconds=1), '{"metrics": {"vibration": 2}}'],
        )
    assert mismatched_rollups() == 2  # the minute and the hour

    telemetry_rollups_rebuild(device_id=devices[0].id, start=BASE, end=BASE + timedelta(seconds=2))

    assert mismatched_rollups() == 0


def test_deleting_a_device_deletes_its_rollups(devices):
    store(devices[0], [(BASE, {"vibration": 1})])
    drain()
    devices[0].delete()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM telemetry_rollups")
        assert cursor.fetchone()[0] == 0

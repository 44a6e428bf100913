"""The ingest path: one request's readings stored, the device's state recorded, the rules
evaluated, in one transaction. The caller replies only after it commits, so an acknowledged
reading is a committed one."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from django.db import connection, transaction

from iothub.db import DATABASE_ERRORS, execute_prepared, is_retryable
from iothub.devices.models import Device
from iothub.events.models import Event
from iothub.ingest.evaluation import readings_evaluate, readings_may_trigger
from iothub.rules.models import Rule
from iothub.telemetry.services import NewReading, StoredReading

logger = logging.getLogger(__name__)
# A transaction PostgreSQL chose as a deadlock's victim is rolled back whole, so it is tried again.
# Ingest meets one when readings start a new TimescaleDB chunk under concurrent requests: the
# request creating the chunk must lock `devices` to add the chunk's foreign key, while the others,
# whose statement has already opened `devices` for its update, wait for that chunk.
ATTEMPTS = 3


@dataclass(frozen=True)
class IngestResult:
    readings: list[StoredReading]
    events: list[Event]


def telemetry_ingest(
    *, device: Device, readings: Sequence[NewReading], rules: Sequence[Rule] | None = None
) -> IngestResult:
    """Store validated readings of one device; all or nothing.

    `rules` are the device's enabled rules when the caller has read them already (ingest reads them
    with the device); None reads them here.
    """
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _ingest(device=device, readings=readings, rules=rules)
        except DATABASE_ERRORS as error:
            # Everything was rolled back; a deadlock on a new chunk clears on the next attempt.
            # (Inside a caller's transaction the error has spoilt that transaction: not ours to retry.)
            if attempt == ATTEMPTS or not is_retryable(error) or connection.in_atomic_block:
                raise
            logger.warning("ingest for device %s retried after %s", device.id, type(error).__name__)
    raise AssertionError("unreachable")


def _ingest(*, device: Device, readings: Sequence[NewReading], rules: Sequence[Rule] | None) -> IngestResult:
    if rules is not None and not readings_may_trigger(device=device, readings=readings, rules=rules):
        # Nothing can raise an event, so the write is the whole request: one statement, atomic on
        # its own, committed as it returns. No transaction block, no round trips to open and close it.
        return IngestResult(readings=_store_and_record(device=device, readings=readings), events=[])
    with transaction.atomic():
        stored = _store_and_record(device=device, readings=readings)
        # The rules engine's place: inside the transaction, after the rows exist.
        events = readings_evaluate(device=device, readings=stored, rules=rules)
    return IngestResult(readings=stored, events=events)


# The readings and the device's state in one statement, so a request costs one round trip for its
# writes whatever the batch size:
# - the rows go in as two array parameters, in the order given (ids ascend in that order);
# - `last_seen` only moves forward;
# - the status follows DESIGN: `error` while the newest primary-metric reading lies outside the
#   type's range, `active` otherwise; a reading older than `last_seen` (a buffered backlog) leaves
#   it alone, and an inactive device that reports is active again;
# - `latest_metrics` keeps, per metric, the newest value with its time (UTC, always six decimals, so
#   the text does not depend on the session's time zone or on trailing zeros) and row id.
# It runs under the device row's lock, so concurrent requests of one device serialise here and
# can neither move last_seen back nor replace a newer latest value with an older one.
_STORE_SQL = """
WITH inserted AS (
    INSERT INTO telemetry (device_id, "timestamp", payload)
    SELECT %(device_id)s, r.ts, r.payload
    FROM unnest(%(timestamps)s::timestamptz[], %(payloads)s::jsonb[]) WITH ORDINALITY AS r(ts, payload, n)
    ORDER BY r.n
    RETURNING id, "timestamp", payload
),
newest AS (
    SELECT DISTINCT ON (m.key) m.key, m.value, i."timestamp", i.id
    FROM inserted AS i, jsonb_each(i.payload -> 'metrics') AS m(key, value)
    ORDER BY m.key, i."timestamp" DESC, i.id DESC
),
primary_reading AS (
    SELECT "timestamp", (value)::numeric AS value FROM newest WHERE key = %(primary_metric)s
),
updated AS (
    UPDATE devices AS d SET
        last_seen = GREATEST(d.last_seen, (SELECT max("timestamp") FROM inserted)),
        status = CASE
            WHEN p."timestamp" IS NOT NULL AND (d.last_seen IS NULL OR p."timestamp" >= d.last_seen) THEN
                CASE WHEN p.value < %(metric_min)s OR p.value > %(metric_max)s THEN 'error' ELSE 'active' END
            WHEN d.status = 'inactive' THEN 'active'
            ELSE d.status
        END,
        latest_metrics = (
            SELECT jsonb_object_agg(
                key,
                CASE
                    WHEN old.value IS NULL THEN new.value
                    WHEN new.value IS NULL THEN old.value
                    WHEN (new.value ->> 'timestamp')::timestamptz >= (old.value ->> 'timestamp')::timestamptz
                        THEN new.value
                    ELSE old.value
                END
            )
            FROM jsonb_each(COALESCE(d.latest_metrics, '{}'::jsonb)) AS old(key, value)
            FULL JOIN (
                SELECT key, jsonb_build_object(
                    'value', value,
                    'timestamp', to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                    'telemetry_id', id
                ) AS value
                FROM newest
            ) AS new USING (key)
        )
    FROM (SELECT 1) AS one LEFT JOIN primary_reading AS p ON TRUE
    WHERE d.id = %(device_id)s
    RETURNING d.status
)
SELECT i.id, i."timestamp", (SELECT status FROM updated) FROM inserted AS i ORDER BY i.id
"""


def _store_and_record(*, device: Device, readings: Sequence[NewReading]) -> list[StoredReading]:
    device_type = device.device_type
    params = {
        "device_id": device.id,
        "timestamps": [r.timestamp for r in readings],
        # orjson: a tenth of the stdlib's time, which counts at 500 messages a batch.
        "payloads": [orjson.dumps(r.payload).decode() for r in readings],
        "primary_metric": device_type.metric_name,
        "metric_min": device_type.metric_min,
        "metric_max": device_type.metric_max,
    }
    rows = execute_prepared(_STORE_SQL, params)
    device.status = rows[0][2]
    return [
        StoredReading(id=row_id, timestamp=timestamp, payload=reading.payload)
        for (row_id, timestamp, _), reading in zip(rows, readings, strict=True)
    ]

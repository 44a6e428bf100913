"""Writes to telemetry, and readings as the flows pass them around: validated (new) and stored.

The telemetry table is written here and nowhere else: ingest hands over the readings of a whole
batch (any number of devices) and gets their ids back.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple
from uuid import UUID

import orjson

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
_INSERT_SQL = """
INSERT INTO telemetry (device_id, "timestamp", payload)
SELECT (r.row ->> 0)::uuid, (r.row ->> 1)::timestamptz, r.row -> 2
FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS r(row, n)
ORDER BY r.n
RETURNING id
"""


def telemetry_insert(*, rows: Sequence[tuple[UUID, NewReading]]) -> list[StoredReading]:
    """Insert readings of one or many devices, `(device_id, reading)` each, in one statement, inside
    the caller's transaction; returns them as stored, in the order given.

    It touches only the telemetry table: callers that also update `devices` do so in a statement
    of their own, after this one (see `iothub.ingest.services` for why the order matters).
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
    ids = sorted(row[0] for row in execute_prepared(_INSERT_SQL, {"rows": document.decode()}))
    if len(ids) != len(rows):
        raise AssertionError(f"inserted {len(ids)} telemetry rows for {len(rows)} readings")
    return [
        StoredReading(id=row_id, timestamp=timestamp, payload=reading.payload)
        for row_id, timestamp, (_, reading) in zip(ids, timestamps, rows, strict=True)
    ]

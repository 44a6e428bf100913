"""Writes to the telemetry hypertable."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.db import connection


def _encode(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"))


@dataclass(frozen=True)
class NewReading:
    """A validated reading, ready to store. `payload` is the message as the spec stores it."""

    timestamp: datetime
    payload: dict

    @property
    def metrics(self) -> dict[str, int | float]:
        return self.payload["metrics"]


@dataclass(frozen=True)
class StoredReading:
    """A reading as stored: the row's id and timestamp, and what it carried."""

    id: int
    timestamp: datetime
    payload: dict

    @property
    def metrics(self) -> dict[str, int | float]:
        return self.payload["metrics"]


# One statement for any number of rows: the arrays travel as two parameters and come back as rows
# with their ids, so a batch costs one round trip and no per-row Python work in the ORM.
_INSERT_SQL = """
    INSERT INTO telemetry (device_id, "timestamp", payload)
    SELECT %s, r.ts, r.payload
    FROM unnest(%s::timestamptz[], %s::jsonb[]) WITH ORDINALITY AS r(ts, payload, n)
    ORDER BY r.n
    RETURNING id, "timestamp"
"""


def telemetry_store(*, device_id: UUID, readings: Sequence[NewReading]) -> list[StoredReading]:
    """Insert the readings of one device in one statement; returns them in the given order."""
    if not readings:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_SQL,
            [device_id, [r.timestamp for r in readings], [_encode(r.payload) for r in readings]],
        )
        rows = cursor.fetchall()
    # INSERT ... SELECT ... ORDER BY inserts in that order and RETURNING reports rows in insertion
    # order, so the n-th row returned is the n-th reading.
    return [
        StoredReading(id=row_id, timestamp=ts, payload=reading.payload)
        for (row_id, ts), reading in zip(rows, readings, strict=True)
    ]

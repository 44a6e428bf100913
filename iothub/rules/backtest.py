"""Backtesting a rule: how many events it, or an edited draft of it, would have raised on the
readings already stored, honouring its cooldown, so a threshold can be tuned before it pages anyone.

The database does the scan: the device's readings in the range, on the `(device_id, timestamp)`
index and only the chunks the range touches, filtered by the condition, so that only matching
readings travel. Each is then checked again with the pure comparison the live evaluation uses, and
the cooldown is replayed in timestamp order exactly as the live claim applies it
(`last <= reading - cooldown`), starting as if the rule had never triggered before the range.

Bounded: the range is at most `MAX_RANGE`; at most `MAX_MATCHES` matching readings are replayed,
and a scan that hits that cap says so (`truncated`, with the time it reached).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from django.db import connection

from iothub.rules.conditions import SQL_OPERATORS, condition_matches, metric_decimal

MAX_RANGE = timedelta(days=31)
MAX_MATCHES = 100_000
MAX_FIRST_EVENTS = 100


@dataclass(frozen=True)
class BacktestEvent:
    timestamp: datetime
    value: Decimal
    telemetry_id: int


@dataclass(frozen=True)
class BacktestResult:
    events: int  # events the rule would have raised
    matching_readings: int  # readings over the threshold, cooldown or not
    first_events: list[BacktestEvent]
    truncated: bool  # the scan stopped at MAX_MATCHES matching readings
    scanned_until: datetime  # the end of what was replayed: `end`, or the last reading when truncated


def rule_backtest(
    *,
    device_id: UUID,
    metric: str,
    operator: str,
    threshold: Decimal,
    cooldown_minutes: int,
    start: datetime,
    end: datetime,
    first: int = 10,
) -> BacktestResult:
    """Replay the condition over the device's readings in `[start, end)`."""
    if end <= start:
        raise ValueError("end must be after start")
    if end - start > MAX_RANGE:
        raise ValueError(f"the range is longer than {MAX_RANGE.days} days")
    sql_operator = SQL_OPERATORS[operator]
    value_sql = "payload -> 'metrics' -> %(metric)s"
    query = f"""
        SELECT id, "timestamp", {value_sql} #>> '{{}}'
        FROM telemetry
        WHERE device_id = %(device_id)s
          AND "timestamp" >= %(start)s AND "timestamp" < %(end)s
          AND CASE WHEN jsonb_typeof({value_sql}) = 'number'
                   THEN ({value_sql} #>> '{{}}')::numeric {sql_operator} %(threshold)s
              END
        ORDER BY "timestamp", id
        LIMIT %(limit)s
    """  # noqa: S608 - the operator comes from a fixed table, every value is a parameter
    params = {
        "device_id": device_id,
        "metric": metric,
        "start": start,
        "end": end,
        "threshold": threshold,
        "limit": MAX_MATCHES + 1,
    }
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        rows = cursor.fetchall()

    truncated = len(rows) > MAX_MATCHES
    rows = rows[:MAX_MATCHES]
    cooldown = timedelta(minutes=cooldown_minutes)
    last: datetime | None = None
    events = matching = 0
    first_events: list[BacktestEvent] = []
    for telemetry_id, timestamp, text in rows:
        value = metric_decimal(text)
        if value is None or not condition_matches(operator=operator, value=value, threshold=threshold):
            continue
        matching += 1
        if last is None or last <= timestamp - cooldown:
            last = timestamp
            events += 1
            if len(first_events) < first:
                first_events.append(BacktestEvent(timestamp=timestamp, value=value, telemetry_id=telemetry_id))
    return BacktestResult(
        events=events,
        matching_readings=matching,
        first_events=first_events,
        truncated=truncated,
        scanned_until=rows[-1][1] if truncated else end,
    )

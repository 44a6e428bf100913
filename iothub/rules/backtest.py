"""Backtesting a rule: how many events it, or an edited draft of it, would have raised and
resolved on the readings already stored, and when, so that a threshold and its alarm options can be
tuned before the rule pages anyone.

The replay is the live rule's own state machine (`iothub.rules.machine.transition`), fed the
device's readings in timestamp order from a fresh state (as if the rule had never triggered before
the range), so that what it counts is what ingest would have done: the cooldown, the duration, the
hysteresis and auto-resolve, one open event per rule. What a replay cannot know is left out: no
person acknowledges or resolves an event in it, and a nodata rule's silence is judged at the
moment it reaches `duration_seconds` (the worker looks every `IOTHUB_WORKER_ALARM_CHECK_SECONDS`).

The database does the scan: the device's readings in the range, on the `(device_id, timestamp)`
index and only the chunks the range touches. A rule without alarm options needs only the readings
that meet its condition, so the database filters them; a stateful rule needs every reading of its
metric (a reading that breaks the condition resets a duration, one on the safe side clears).

Bounded: the range is at most `MAX_RANGE`; at most `MAX_MATCHES` readings are replayed, and a scan
that hits that cap says so (`truncated`, with the time it reached).
"""

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from django.db import connection

from iothub.rules.conditions import SQL_OPERATORS, metric_decimal
from iothub.rules.machine import RAISE, RESOLVE, UPDATE, Alarm, Reading, Silence, State, alarm_of, transition

MAX_RANGE = timedelta(days=31)
MAX_MATCHES = 100_000
MAX_FIRST_EVENTS = 100


@dataclass(frozen=True)
class BacktestEvent:
    timestamp: datetime
    value: Decimal | None  # None: a nodata rule's event
    telemetry_id: int | None
    occurrences: int = 1  # breaches folded into it while open (`dedupe_while_open`)
    resolved_at: datetime | None = None  # when auto-resolve (or a nodata rule's next reading) resolved it
    resolved_telemetry_id: int | None = None


@dataclass(frozen=True)
class BacktestResult:
    events: int  # events the rule would have raised
    matching_readings: int  # readings over the threshold, cooldown or not (nodata: silences)
    first_events: list[BacktestEvent]
    truncated: bool  # the scan stopped at MAX_MATCHES readings
    scanned_until: datetime  # the end of what was replayed: `end`, or the last reading when truncated
    resolved: int = 0  # of those events, how many the hub would have resolved itself
    updates: int = 0  # breaches folded into an open event instead of raising one


def rule_backtest(
    *, device_id: UUID, metric: str, rule, start: datetime, end: datetime, first: int = 10
) -> BacktestResult:
    """Replay `rule` (a `Rule`, or a draft with its fields) over the device's readings of `metric`
    in `[start, end)`."""
    if end <= start:
        raise ValueError("end must be after start")
    if end - start > MAX_RANGE:
        raise ValueError(f"the range is longer than {MAX_RANGE.days} days")
    alarm = alarm_of(rule)
    value_sql = "payload -> 'metrics' -> %(metric)s"
    if alarm.stateful:
        # Every reading that carries the metric (a nodata rule counts any value).
        condition = f"{value_sql} IS NOT NULL"
    else:
        sql_operator = SQL_OPERATORS[rule.operator]
        condition = f"""CASE WHEN jsonb_typeof({value_sql}) = 'number'
                   THEN ({value_sql} #>> '{{}}')::numeric {sql_operator} %(threshold)s
              END"""
    query = f"""
        SELECT id, "timestamp", {value_sql}
        FROM telemetry
        WHERE device_id = %(device_id)s
          AND "timestamp" >= %(start)s AND "timestamp" < %(end)s
          AND {condition}
        ORDER BY "timestamp", id
        LIMIT %(limit)s
    """  # noqa: S608 - the operator comes from a fixed table, every value is a parameter
    params = {
        "device_id": device_id,
        "metric": metric,
        "start": start,
        "end": end,
        "threshold": rule.threshold,
        "limit": MAX_MATCHES + 1,
    }
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        rows = cursor.fetchall()

    truncated = len(rows) > MAX_MATCHES
    rows = rows[:MAX_MATCHES]
    scanned_until = rows[-1][1] if truncated else end
    replay = _Replay(alarm, first)
    # A nodata rule's silence counts from the start of the range, as if a reading had come then.
    state = State(last_reading_at=start) if alarm.nodata else State()
    for telemetry_id, timestamp, raw in rows:
        value = _json_value(raw)
        if not alarm.nodata and metric_decimal(value) is None:
            continue
        if alarm.nodata:
            state = replay.silence(state, timestamp)
        elif alarm.breaches(value):
            replay.matching += 1
        state = replay.step(state, Reading(timestamp, value, telemetry_id))
    if alarm.nodata and not truncated:
        replay.silence(state, end)
    return BacktestResult(
        events=replay.raised,
        matching_readings=replay.matching,
        first_events=[e.result() for e in replay.first],
        truncated=truncated,
        scanned_until=scanned_until,
        resolved=replay.resolved,
        updates=replay.updates,
    )


def _json_value(raw: object) -> object:
    # Django's psycopg setup hands jsonb over as text.
    return json.loads(raw) if isinstance(raw, str) else raw


@dataclass
class _ReplayedEvent:
    timestamp: datetime
    value: Decimal | None
    telemetry_id: int | None
    occurrences: int = 1
    resolved_at: datetime | None = None
    resolved_telemetry_id: int | None = None

    def result(self) -> BacktestEvent:
        return BacktestEvent(
            timestamp=self.timestamp,
            value=self.value,
            telemetry_id=self.telemetry_id,
            occurrences=self.occurrences,
            resolved_at=self.resolved_at,
            resolved_telemetry_id=self.resolved_telemetry_id,
        )


class _Replay:
    """The machine run over readings, its actions counted and the first few events kept."""

    def __init__(self, alarm: Alarm, first: int):
        self.alarm = alarm
        self.keep = first
        self.first: list[_ReplayedEvent] = []
        self.open: _ReplayedEvent | None = None
        self.raised = self.resolved = self.updates = self.matching = 0
        self.next_id = 1

    def silence(self, state: State, until: datetime) -> State:
        """A nodata rule looked at when its silence reached `duration_seconds`, if it did before `until`."""
        if state.last_reading_at is None or until - state.last_reading_at < self.alarm.duration:
            return state
        self.matching += 1
        return self.step(state, Silence(state.last_reading_at + self.alarm.duration))

    def step(self, state: State, observation: Reading | Silence) -> State:
        state, action = transition(self.alarm, state, observation)
        if action is None:
            return state
        if action.kind == RAISE:
            self.raised += 1
            reading = action.reading
            self.open = _ReplayedEvent(
                timestamp=action.at,
                value=metric_decimal(reading.value) if reading else None,
                telemetry_id=reading.telemetry_id if reading else None,
            )
            if len(self.first) < self.keep:
                self.first.append(self.open)
            state = replace(state, open_event=self.next_id)
            self.next_id += 1
        elif action.kind == UPDATE:
            self.updates += 1
            if self.open is not None:
                self.open.occurrences += 1
        elif action.kind == RESOLVE:
            self.resolved += 1
            if self.open is not None:
                self.open.resolved_at = action.at
                self.open.resolved_telemetry_id = action.reading.telemetry_id
                self.open = None
        return state

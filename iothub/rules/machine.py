"""A rule as a small state machine: one pure transition, `transition(alarm, state, observation)`,
that ingest (on each reading), the worker (on silence, for nodata rules) and the backtest (over
stored readings) all call. No models, no database, no clock: time is the readings' own.

Phases (docs/rules.md):

- `ok`: the condition does not hold.
- `pending`: it holds on every reading since `since`, not yet for `duration_seconds`.
- `firing`: it held long enough; the rule raised its event (or folded the breach into its open
  event, or the cooldown held it back). A reading between `clear_threshold` and `threshold` (the
  hysteresis band) keeps it firing.
- `cleared`: back on the safe side of `clear_threshold` since `since`; after
  `clear_duration_seconds` there, an `auto_resolve` rule resolves its open event and is `ok`.

What comes out is at most one action per observation: `RAISE` a new event, `UPDATE` the open
event with a further breach (`dedupe_while_open`), `RESOLVE` the open event (auto-resolve, or a
nodata rule hearing from its device again). The caller carries them out and feeds the next
observation the state returned, with the raised event's id put in `open_event`.

With none of the options set, a rule behaves exactly as the spec's: every reading that meets the
condition raises an event once the cooldown since the last one has passed.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from types import SimpleNamespace
from typing import NamedTuple

from iothub.rules.conditions import cooldown_blocks, reading_matcher

OK, PENDING, FIRING, CLEARED = "ok", "pending", "firing", "cleared"
NODATA = "nodata"

RAISE, UPDATE, RESOLVE = "raise", "update", "resolve"

# `open_event` of a state whose event is being raised and has no id yet.
NEW_EVENT = 0


@dataclass(frozen=True, slots=True)
class State:
    phase: str = OK
    since: datetime | None = None  # when the phase began, by the readings' timestamps
    last_reading_at: datetime | None = None  # the newest observation judged
    open_event: int | None = None  # the rule's event while it is new or acknowledged
    last_triggered_at: datetime | None = None  # the spec's `rules.last_triggered_at`


class Reading(NamedTuple):
    """A reading of the rule's metric: its time, its raw JSON value, its telemetry id."""

    at: datetime
    value: object
    telemetry_id: int | None = None


class Silence(NamedTuple):
    """No reading has come: the worker's look at a nodata rule at `at` (wall-clock time)."""

    at: datetime


class Action(NamedTuple):
    kind: str  # RAISE, UPDATE or RESOLVE
    at: datetime
    reading: Reading | None  # None for a nodata rule's RAISE


@dataclass(frozen=True, slots=True)
class Alarm:
    """What the machine reads of a rule, worked out once (`alarm_of`) for every observation."""

    nodata: bool
    breaches: Callable[[object], bool]  # the condition against `threshold`
    safe: Callable[[object], bool]  # back on the safe side of `clear_threshold`
    duration: timedelta
    clear_duration: timedelta
    auto_resolve: bool
    dedupe: bool
    cooldown_minutes: int | None
    stateful: bool  # keeps a state between requests (any option set); else its state is the cooldown


def alarm_of(rule) -> Alarm:
    """The `Alarm` of a rule (a `Rule`, or anything with its fields: a backtest's draft). Made once
    per distinct set of fields: ingest reads the rules again for every batch."""
    return _alarm(
        rule.operator,
        rule.threshold,
        rule.clear_threshold,
        rule.duration_seconds or 0,
        rule.clear_duration_seconds or 0,
        bool(rule.auto_resolve),
        bool(rule.dedupe_while_open),
        rule.cooldown_minutes,
    )


@lru_cache(maxsize=4096)
def _alarm(operator, threshold, clear_threshold, duration, clear_duration, auto_resolve, dedupe, cooldown) -> Alarm:
    rule = SimpleNamespace(
        operator=operator,
        threshold=threshold,
        clear_threshold=clear_threshold,
        duration_seconds=duration,
        clear_duration_seconds=clear_duration,
        auto_resolve=auto_resolve,
        dedupe_while_open=dedupe,
        cooldown_minutes=cooldown,
    )
    nodata = rule.operator == NODATA
    if nodata:
        breaches = safe = _never
    else:
        breaches = reading_matcher(operator=rule.operator, threshold=rule.threshold)
        if rule.clear_threshold is None or rule.clear_threshold == rule.threshold:
            safe = _negation(breaches)
        else:
            safe = _negation(reading_matcher(operator=rule.operator, threshold=rule.clear_threshold))
    duration = rule.duration_seconds or 0
    clear_duration = rule.clear_duration_seconds or 0
    return Alarm(
        nodata=nodata,
        breaches=breaches,
        safe=safe,
        duration=timedelta(seconds=duration),
        clear_duration=timedelta(seconds=clear_duration),
        auto_resolve=bool(rule.auto_resolve),
        dedupe=bool(rule.dedupe_while_open),
        cooldown_minutes=rule.cooldown_minutes,
        stateful=rule_is_stateful(rule),
    )


def rule_is_stateful(rule) -> bool:
    """Whether the rule keeps a state (`rule_states`) between requests: any option that needs more
    than the cooldown. Reminders and escalation are the event's, not the rule's."""
    return bool(
        rule.operator == NODATA
        or rule.duration_seconds
        or rule.clear_duration_seconds
        or rule.clear_threshold is not None
        or rule.auto_resolve
        or rule.dedupe_while_open
    )


def _never(raw: object) -> bool:
    return False


def _negation(matches: Callable[[object], bool]) -> Callable[[object], bool]:
    def safe(raw: object) -> bool:
        return _number(raw) and not matches(raw)

    return safe


def _number(raw: object) -> bool:
    if type(raw) is float:
        return raw == raw and raw not in (float("inf"), float("-inf"))
    return isinstance(raw, int | Decimal) and not isinstance(raw, bool)


def transition(alarm: Alarm, state: State, observation: Reading | Silence) -> tuple[State, Action | None]:
    """The rule's next state on one observation, and what to do about it (or None)."""
    if isinstance(observation, Silence):
        return _silence(alarm, state, observation.at)
    at = observation.at
    if state.last_reading_at is not None and at < state.last_reading_at:
        # Older than what the rule has judged: the state does not go back in time; a breach still
        # counts as an occurrence of the open event.
        if alarm.dedupe and state.open_event is not None and alarm.breaches(observation.value):
            return state, Action(UPDATE, at, observation)
        return state, None
    state = replace(state, last_reading_at=at)
    if alarm.nodata:
        if state.phase == FIRING:
            action = Action(RESOLVE, at, observation) if state.open_event is not None else None
            return replace(state, phase=OK, since=None, open_event=None), action
        return state, None
    value = observation.value
    if alarm.breaches(value):
        if state.phase == FIRING or (state.phase == CLEARED and at - state.since < alarm.clear_duration):
            return _breach_while_firing(alarm, replace(state, phase=FIRING), observation)
        if state.phase == PENDING:
            if at - state.since >= alarm.duration:
                return _fire(alarm, state, observation)
            return state, None
        # ok, or cleared for long enough: the condition must hold for `duration` again
        if alarm.duration:
            return replace(state, phase=PENDING, since=at), None
        return _fire(alarm, state, observation)
    if state.phase == PENDING:
        return replace(state, phase=OK, since=None), None
    if not alarm.safe(value):
        # In the hysteresis band (or not a number): a firing rule keeps firing; clearing starts again.
        if state.phase == CLEARED and at - state.since < alarm.clear_duration:
            return replace(state, phase=FIRING, since=at), None
        return state, None
    if state.phase == FIRING:
        state = replace(state, phase=CLEARED, since=at)
    if state.phase == CLEARED and at - state.since >= alarm.clear_duration:
        return _cleared(alarm, state, observation)
    return state, None


def _fire(alarm: Alarm, state: State, reading: Reading) -> tuple[State, Action | None]:
    """The condition has held for `duration`: the rule fires."""
    return _breach_while_firing(alarm, replace(state, phase=FIRING, since=reading.at), reading)


def _breach_while_firing(alarm: Alarm, state: State, reading: Reading) -> tuple[State, Action | None]:
    if alarm.dedupe and state.open_event is not None:
        return state, Action(UPDATE, reading.at, reading)
    return _raise(alarm, state, reading.at, reading)


def _raise(alarm: Alarm, state: State, at: datetime, reading: Reading | None) -> tuple[State, Action | None]:
    if cooldown_blocks(last_triggered_at=state.last_triggered_at, cooldown_minutes=alarm.cooldown_minutes, at=at):
        return state, None
    return replace(state, last_triggered_at=at, open_event=NEW_EVENT), Action(RAISE, at, reading)


def _cleared(alarm: Alarm, state: State, reading: Reading) -> tuple[State, Action | None]:
    """On the safe side for `clear_duration`: an auto-resolving rule resolves its event."""
    if alarm.auto_resolve:
        action = Action(RESOLVE, reading.at, reading) if state.open_event is not None else None
        return replace(state, phase=OK, since=None, open_event=None), action
    if state.open_event is None:
        return replace(state, phase=OK, since=None), None
    return state, None


def _silence(alarm: Alarm, state: State, now: datetime) -> tuple[State, Action | None]:
    """A nodata rule looked at by the worker: silent since `last_reading_at` for `duration`?"""
    if not alarm.nodata or state.phase == FIRING or state.last_reading_at is None:
        return state, None
    if now - state.last_reading_at < alarm.duration:
        return state, None
    silent_since = state.last_reading_at + alarm.duration
    fired = replace(state, phase=FIRING, since=silent_since)
    if alarm.dedupe and state.open_event is not None:
        return fired, None
    return _raise(alarm, fired, now, None)


def silence_due(alarm: Alarm, state: State) -> datetime | None:
    """When a nodata rule in this state raises if nothing comes; None while it is firing."""
    if not alarm.nodata or state.phase == FIRING or state.last_reading_at is None:
        return None
    return state.last_reading_at + alarm.duration

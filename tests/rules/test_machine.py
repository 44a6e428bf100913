"""The rule's state machine, pure: no database. Examples of each option, then properties over
random reading sequences (hypothesis): a spec-only rule is exactly the cooldown rule, no flapping
inside the hysteresis band, one open event per rule."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from iothub.rules.conditions import condition_matches, cooldown_blocks
from iothub.rules.machine import (
    FIRING,
    NEW_EVENT,
    OK,
    PENDING,
    RAISE,
    RESOLVE,
    UPDATE,
    Reading,
    Silence,
    State,
    alarm_of,
    transition,
)

T0 = datetime(2025, 1, 21, 10, tzinfo=UTC)


def rule(**fields):
    base = {
        "operator": "gt",
        "threshold": Decimal("15"),
        "clear_threshold": None,
        "duration_seconds": 0,
        "clear_duration_seconds": 0,
        "auto_resolve": False,
        "dedupe_while_open": False,
        "cooldown_minutes": 0,
    }
    base.update(fields)
    if base["clear_threshold"] is not None:
        base["clear_threshold"] = Decimal(str(base["clear_threshold"]))
    return SimpleNamespace(**base)


def run(r, values, *, step=timedelta(seconds=10), state=None):
    """Feed `values` one `step` apart; the actions as (kind, seconds from T0), and the last state.
    A raised event gets an id, as the caller gives it."""
    alarm = alarm_of(r)
    state = state or State()
    actions = []
    next_id = 1
    for i, value in enumerate(values):
        at = T0 + i * step
        state, action = transition(alarm, state, Reading(at, value, i))
        if action is not None:
            actions.append((action.kind, int((action.at - T0).total_seconds())))
            if action.kind == RAISE:
                assert state.open_event == NEW_EVENT
                state = State(**{**_fields(state), "open_event": next_id})
                next_id += 1
    return actions, state


def _fields(state):
    return {name: getattr(state, name) for name in State.__slots__}


def test_duration_raises_once_the_condition_held_long_enough():
    actions, state = run(rule(duration_seconds=30, cooldown_minutes=15), [16, 16, 16, 16, 16])

    assert actions == [(RAISE, 30)]  # then the cooldown holds the next ones back, as the spec's
    assert (state.phase, state.since) == (FIRING, T0 + timedelta(seconds=30))


def test_a_reading_that_breaks_the_condition_resets_the_duration():
    actions, state = run(rule(duration_seconds=30), [16, 16, 14, 16, 16, 16])

    assert actions == []
    assert (state.phase, state.since) == (PENDING, T0 + timedelta(seconds=30))


def test_auto_resolve_after_the_clear_duration_below_the_clear_threshold():
    r = rule(clear_threshold=12, clear_duration_seconds=20, auto_resolve=True)

    actions, state = run(r, [16, 13, 11, 11, 11])

    # 13 is inside the band (12, 15]: still firing; 11 from t=20 on, clear at t=40.
    assert actions == [(RAISE, 0), (RESOLVE, 40)]
    assert (state.phase, state.open_event) == (OK, None)


def test_oscillating_inside_the_band_raises_and_resolves_nothing():
    r = rule(clear_threshold=12, auto_resolve=True, dedupe_while_open=True)

    actions, _ = run(r, [16, 13, 14, 12.5, 15, 13, 14.9])

    assert actions == [(RAISE, 0)]


def test_dedupe_updates_the_open_event_and_raises_after_it_resolved():
    r = rule(dedupe_while_open=True, auto_resolve=True)

    actions, _ = run(r, [16, 17, 18, 10, 16])

    assert actions == [(RAISE, 0), (UPDATE, 10), (UPDATE, 20), (RESOLVE, 30), (RAISE, 40)]


def test_dedupe_keeps_one_event_while_an_acknowledged_event_stays_open():
    r = rule(dedupe_while_open=True)  # no auto-resolve: only a person resolves

    actions, state = run(r, [16, 10, 16, 10, 16])

    assert actions == [(RAISE, 0), (UPDATE, 20), (UPDATE, 40)]
    assert state.open_event == 1


def test_without_dedupe_the_cooldown_decides_as_the_spec_says():
    r = rule(cooldown_minutes=1)

    actions, _ = run(r, [16, 17, 10, 16, 16, 16, 16, 16, 16])

    assert actions == [(RAISE, 0), (RAISE, 60)]


def test_a_reading_older_than_the_last_judged_changes_no_phase():
    alarm = alarm_of(rule(duration_seconds=30))
    state, _ = transition(alarm, State(), Reading(T0 + timedelta(seconds=60), 16))

    late, action = transition(alarm, state, Reading(T0, 10))

    assert (late, action) == (state, None)


def test_an_older_breach_still_counts_as_an_occurrence_of_the_open_event():
    alarm = alarm_of(rule(dedupe_while_open=True))
    state, _ = transition(alarm, State(), Reading(T0 + timedelta(seconds=60), 16))
    state = State(**{**_fields(state), "open_event": 1})

    late, action = transition(alarm, state, Reading(T0, 17))

    assert late == state and action.kind == UPDATE


def test_nodata_raises_after_the_silence_and_resolves_on_the_next_reading():
    alarm = alarm_of(rule(operator="nodata", threshold=Decimal(0), duration_seconds=300))
    state, _ = transition(alarm, State(), Reading(T0, 1))

    quiet, early = transition(alarm, state, Silence(T0 + timedelta(seconds=299)))
    fired, raised = transition(alarm, quiet, Silence(T0 + timedelta(seconds=301)))
    again, nothing = transition(alarm, State(**{**_fields(fired), "open_event": 7}), Silence(T0 + timedelta(hours=1)))
    back, resolved = transition(alarm, again, Reading(T0 + timedelta(hours=1), 5, 99))

    assert early is None and quiet.phase == OK
    assert raised.kind == RAISE and fired.since == T0 + timedelta(seconds=300)
    assert nothing is None
    assert resolved.kind == RESOLVE and resolved.reading.telemetry_id == 99
    assert (back.phase, back.open_event) == (OK, None)


# ------------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------------

values = st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=60)
gaps = st.lists(st.integers(min_value=0, max_value=600), min_size=60, max_size=60)


def timeline(vals, gaps_):
    at = T0
    out = []
    for value, gap in zip(vals, gaps_, strict=False):
        at += timedelta(seconds=gap)
        out.append(Reading(at, value))
    return out


@settings(max_examples=200, deadline=None)
@given(vals=values, gaps_=gaps, cooldown=st.integers(min_value=0, max_value=20))
def test_a_rule_without_options_is_the_specs_cooldown_rule(vals, gaps_, cooldown):
    r = rule(cooldown_minutes=cooldown)
    alarm = alarm_of(r)
    state, last = State(), None
    for reading in timeline(vals, gaps_):
        state, action = transition(alarm, state, reading)
        meets = condition_matches(operator="gt", value=Decimal(reading.value), threshold=Decimal(15))
        expected = meets and not cooldown_blocks(last_triggered_at=last, cooldown_minutes=cooldown, at=reading.at)
        assert (action is not None) == expected
        assert action is None or action.kind == RAISE
        if expected:
            last = reading.at


@settings(max_examples=200, deadline=None)
@given(
    vals=st.lists(st.sampled_from([13, 14, 15]), min_size=1, max_size=60),
    gaps_=gaps,
    options=st.fixed_dictionaries(
        {
            "duration_seconds": st.integers(min_value=0, max_value=300),
            "clear_duration_seconds": st.integers(min_value=0, max_value=300),
            "auto_resolve": st.booleans(),
            "dedupe_while_open": st.booleans(),
            "cooldown_minutes": st.integers(min_value=0, max_value=5),
        }
    ),
    start=st.sampled_from([OK, FIRING]),
)
def test_no_flapping_inside_the_hysteresis_band(vals, gaps_, options, start):
    """Values between the clear threshold (12) and the threshold (15, `gt`) neither raise nor
    resolve, whatever the rule was doing before."""
    alarm = alarm_of(rule(clear_threshold=12, **options))
    state = State(phase=start, since=T0 if start == FIRING else None, open_event=1 if start == FIRING else None)
    for reading in timeline(vals, gaps_):
        state, action = transition(alarm, state, reading)
        assert action is None
        assert state.phase == start


@settings(max_examples=200, deadline=None)
@given(
    vals=values,
    gaps_=gaps,
    options=st.fixed_dictionaries(
        {
            "duration_seconds": st.integers(min_value=0, max_value=300),
            "clear_threshold": st.sampled_from([None, 10, 12, 15]),
            "clear_duration_seconds": st.integers(min_value=0, max_value=300),
            "auto_resolve": st.booleans(),
            "cooldown_minutes": st.integers(min_value=0, max_value=5),
        }
    ),
    resolved_by_people=st.sets(st.integers(min_value=0, max_value=59)),
)
def test_one_open_event_per_rule(vals, gaps_, options, resolved_by_people):
    """With `dedupe_while_open`, a rule never raises while its event is open, however readings and
    people (resolving it at random moments) interleave; every update and resolve is of the open one."""
    alarm = alarm_of(rule(dedupe_while_open=True, **options))
    state = State()
    open_events: set[int] = set()
    next_id = 1
    for i, reading in enumerate(timeline(vals, gaps_)):
        if i in resolved_by_people and state.open_event is not None:
            open_events.discard(state.open_event)  # a person resolved it: the caller reads it as closed
            state = State(**{**_fields(state), "open_event": None})
        state, action = transition(alarm, state, reading)
        if action is None:
            continue
        if action.kind == RAISE:
            assert not open_events
            open_events.add(next_id)
            state = State(**{**_fields(state), "open_event": next_id})
            next_id += 1
        elif action.kind == UPDATE:
            assert state.open_event in open_events
        elif action.kind == RESOLVE:
            assert open_events
            open_events.clear()
            assert state.open_event is None
        assert len(open_events) <= 1

"""Where the rules engine plugs into ingest: the stored readings of one request, evaluated against
the device's enabled rules inside the ingest transaction.

For each reading, in timestamp order, and each enabled rule of the device:

1. the value is the reading's `metrics[rule.metric or device_type.metric_name]`; a reading
   without it, or with a value that is not a finite number, is not evaluated by that rule (a
   nodata rule counts any reading that carries the metric);
2. the rule's pure state machine (`iothub.rules.machine.transition`) takes the reading and the
   rule's state and says what to do: raise an event, fold the breach into the open event, resolve
   it, or nothing. A rule with alarm options keeps its state in `rule_states`, locked for the
   transaction (`alarm_states_lock`, in rule id order, once per batch); a spec-only rule's state is
   its `last_triggered_at`;
3. to raise, the cooldown is claimed atomically on the reading's timestamp (`rule_trigger_claim`);
   only the claim's winner raises an event, so concurrent messages over the threshold raise one;
4. the event is written with one `pending` entry per action, and each action's outbox rows:
   notification deliveries, machine commands (which NOTIFY the worker at commit).

Everything an event must do afterwards is written as rows here (outbox); nothing external is
called inside the transaction. Locks are taken in one order: the device row first (ingest updated
it before this runs, so the requests of one device take turns), then the states of its stateful
rules (sorted), then the rules it claims and the events it updates; nothing else locks more than
one rule, and whoever locks a rule's state and its rule or event locks the state first. Ingest
reads the enabled rules with the device (one query for both) and, when no condition holds for any
reading and no stateful rule is concerned (`readings_may_trigger`), never comes here; otherwise
evaluation costs no further read but the states' (one statement per batch).
"""

from collections.abc import Sequence
from uuid import UUID

from iothub import metrics
from iothub.devices.models import Device
from iothub.events.models import Event
from iothub.events.services import alarm_action_apply, alarm_states_lock
from iothub.rules.conditions import cooldown_blocks, metric_decimal, reading_matcher
from iothub.rules.machine import NODATA, Reading, State, alarm_of, rule_is_stateful, transition
from iothub.rules.models import Rule
from iothub.rules.selectors import rules_enabled_for_device
from iothub.rules.services import rule_states_write
from iothub.telemetry.services import NewReading, StoredReading


def readings_may_trigger(*, device: Device, readings: Sequence[NewReading], rules: Sequence[Rule]) -> bool:
    """Whether any rule's condition holds for any reading: the pure comparison alone, no database.

    A rule whose condition holds but which is still cooling down (as read with the device) cannot
    trigger either. A rule with alarm options (`rule_is_stateful`) must see every reading of its
    metric, whatever its value (a reading that breaks the condition resets a pending duration, one
    back on the safe side clears). When it is False, no event can be raised or changed and
    `readings_evaluate` is not called: the evaluations made here are the request's, and are counted.
    """
    primary_metric = device.device_type.metric_name
    evaluated = 0
    for rule in rules:
        metric = rule.metric or primary_metric
        if rule_is_stateful(rule):
            if any(metric in reading.metrics for reading in readings):
                return True
            continue
        matches = reading_matcher(operator=rule.operator, threshold=rule.threshold)
        for reading in readings:
            raw = reading.metrics.get(metric)
            if raw is None:
                continue
            if matches(raw) and not _cooling_down(rule, reading.timestamp):
                return True
            evaluated += 1
    metrics.rules_evaluated(evaluated)
    return False


def stateful_rule_ids(*, device: Device, readings: Sequence[NewReading], rules: Sequence[Rule]) -> list[UUID]:
    """The device's rules with alarm options that these readings concern: whose state to lock."""
    primary_metric = device.device_type.metric_name
    return [
        rule.id
        for rule in rules
        if rule_is_stateful(rule) and any((rule.metric or primary_metric) in r.metrics for r in readings)
    ]


def readings_evaluate(
    *,
    device: Device,
    readings: Sequence[StoredReading],
    rules: Sequence[Rule] | None = None,
    states: dict[UUID, State] | None = None,
) -> list[Event]:
    """Evaluate the device's enabled rules on the readings, in timestamp order; return the events
    raised. Runs inside the ingest transaction, after the readings are inserted. `rules`: the
    device's enabled rules if the caller read them already (ingest reads them with the device).
    `states`: the locked states of its stateful rules (`alarm_states_lock`), which are updated in
    place, for the caller to write back (`rule_states_write`); None: locked and written here."""
    if rules is None:
        rules = rules_enabled_for_device(device_id=device.id)
    if not rules:
        return []
    own_states = states is None
    if own_states:
        states = alarm_states_lock(rule_ids=stateful_rule_ids(device=device, readings=readings, rules=rules))
    before = dict(states)
    primary_metric = device.device_type.metric_name
    judged = []
    for rule in rules:
        alarm = alarm_of(rule)
        if alarm.stateful and rule.id not in states:
            continue  # no reading of its metric here
        judged.append((rule, alarm, rule.metric or primary_metric))
    current = {
        rule.id: states[rule.id] if alarm.stateful else State(last_triggered_at=rule.last_triggered_at)
        for rule, alarm, _ in judged
    }
    events: list[Event] = []
    evaluated = 0
    # Oldest first, so that in a buffered batch the first reading over the threshold claims the
    # cooldown and the ones inside its window do not; ties keep the order they were stored in.
    for reading in sorted(readings, key=lambda r: (r.timestamp, r.id)):
        for rule, alarm, metric in judged:
            raw = reading.metrics.get(metric)
            if raw is None or (not alarm.nodata and metric_decimal(raw) is None):
                continue
            evaluated += 1
            observation = Reading(reading.timestamp, raw, reading.id)
            state = current[rule.id]
            new, action = transition(alarm, state, observation)
            if action is not None:
                new, event = alarm_action_apply(
                    rule=rule,
                    alarm=alarm,
                    device=device,
                    metric=metric,
                    before=state,
                    after=new,
                    action=action,
                    reading=reading,
                )
                if event is not None:
                    events.append(event)
            current[rule.id] = new
    metrics.rules_evaluated(evaluated)
    for rule, alarm, _ in judged:
        if alarm.stateful:
            states[rule.id] = current[rule.id]
    if own_states:
        rule_states_write(states=states_changed(before, states, rules))
    return events


def states_changed(before: dict[UUID, State], after: dict[UUID, State], rules: Sequence[Rule]) -> dict[UUID, State]:
    """The states worth writing back: a change of phase, since or open event (of a nodata rule, of
    its last reading too: its silence is counted from it)."""
    nodata = {rule.id for rule in rules if rule.operator == NODATA}
    return {i: s for i, s in after.items() if _changed(before.get(i), s, nodata=i in nodata)}


def _changed(old: State | None, new: State, *, nodata: bool) -> bool:
    if old is None:
        return True
    if (old.phase, old.since, old.open_event) != (new.phase, new.since, new.open_event):
        return True
    return nodata and old.last_reading_at != new.last_reading_at


def _cooling_down(rule: Rule, at) -> bool:
    return cooldown_blocks(last_triggered_at=rule.last_triggered_at, cooldown_minutes=rule.cooldown_minutes, at=at)

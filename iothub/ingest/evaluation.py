"""Where the rules engine plugs into ingest: the stored readings of one request, evaluated against
the device's enabled rules inside the ingest transaction.

For each reading, in timestamp order, and each enabled rule of the device:

1. the value is the reading's `metrics[rule.metric or device_type.metric_name]`; a reading
   without it, or with a value that is not a finite number, is not evaluated by that rule;
2. the pure comparison (`iothub.rules.conditions`) decides whether the condition holds;
3. if it does, the cooldown is claimed atomically on the reading's timestamp
   (`rule_trigger_claim`); only the claim's winner raises an event, so concurrent messages over the
   threshold raise one;
4. the event is written with one `pending` entry per action, and each action's outbox rows:
   notification deliveries, machine commands (which NOTIFY the worker at commit).

Everything an event must do afterwards is written as rows here (outbox); nothing external is
called inside the transaction. Locks are taken in one order: the device row first (ingest updated
it before this runs, so the requests of one device take turns), then the rules it claims; nothing
else locks more than one rule. Ingest reads the enabled rules with the device (one query for both)
and, when no condition holds for any reading (`readings_may_trigger`), writes without a
transaction block and never comes here; otherwise evaluation costs no further read.
"""

from collections.abc import Sequence

from iothub import metrics
from iothub.devices.models import Device
from iothub.events.models import Event
from iothub.events.services import RESULT_PENDING, event_raise, rule_actions
from iothub.machines.services import machine_command_enqueue
from iothub.notifications.services import notification_deliveries_enqueue
from iothub.rules.actions import NOTIFICATION, STOP_MACHINE
from iothub.rules.conditions import condition_matches, cooldown_blocks, metric_decimal, reading_matcher
from iothub.rules.models import Rule
from iothub.rules.selectors import rules_enabled_for_device
from iothub.rules.services import rule_trigger_claim
from iothub.telemetry.services import NewReading, StoredReading


def readings_may_trigger(*, device: Device, readings: Sequence[NewReading], rules: Sequence[Rule]) -> bool:
    """Whether any rule's condition holds for any reading: the pure comparison alone, no database.

    A rule whose condition holds but which is still cooling down (as read with the device) cannot
    trigger either. When it is False, no event can be raised, ingest needs no transaction around its
    write and
    `readings_evaluate` is not called: the evaluations made here are the request's, and are counted.
    """
    primary_metric = device.device_type.metric_name
    evaluated = 0
    for rule in rules:
        metric = rule.metric or primary_metric
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


def readings_evaluate(
    *, device: Device, readings: Sequence[StoredReading], rules: Sequence[Rule] | None = None
) -> list[Event]:
    """Evaluate the device's enabled rules on the readings, in timestamp order; return the events
    raised. Runs inside the ingest transaction, after the readings are inserted. `rules`: the
    device's enabled rules if the caller read them already (ingest reads them with the device)."""
    if rules is None:
        rules = rules_enabled_for_device(device_id=device.id)
    if not rules:
        return []
    primary_metric = device.device_type.metric_name
    events: list[Event] = []
    evaluated = 0
    # Oldest first, so that in a buffered batch the first reading over the threshold claims the
    # cooldown and the ones inside its window do not; ties keep the order they were stored in.
    for reading in sorted(readings, key=lambda r: (r.timestamp, r.id)):
        for rule in rules:
            metric = rule.metric or primary_metric
            value = metric_decimal(reading.metrics.get(metric))
            if value is None:
                continue
            evaluated += 1
            if not condition_matches(operator=rule.operator, value=value, threshold=rule.threshold):
                continue
            # A rule still cooling down (as read with the device, or since a reading of this batch
            # claimed it) cannot claim: skip the claim's round trip.
            if _cooling_down(rule, reading.timestamp):
                continue
            if not rule_trigger_claim(rule_id=rule.id, at=reading.timestamp):
                continue
            rule.last_triggered_at = reading.timestamp
            event = event_raise(rule=rule, device=device, reading=reading, metric=metric, value=value)
            _actions_enqueue(event=event, actions=rule_actions(rule))
            events.append(event)
    metrics.rules_evaluated(evaluated)
    return events


def _cooling_down(rule: Rule, at) -> bool:
    return cooldown_blocks(last_triggered_at=rule.last_triggered_at, cooldown_minutes=rule.cooldown_minutes, at=at)


def _actions_enqueue(*, event: Event, actions: list[dict]) -> None:
    for index, (action, result) in enumerate(zip(actions, event.execution_results, strict=True)):
        if result["status"] != RESULT_PENDING:
            continue  # refused when the event was raised; the entry says why
        if action["type"] == NOTIFICATION:
            notification_deliveries_enqueue(event=event, action_index=index, action=action)
        elif action["type"] == STOP_MACHINE:
            machine_command_enqueue(event=event, action_index=index, machine_id=action["machine_id"])

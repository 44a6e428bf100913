"""Writes to events: raising them, recording what their actions did, their lifecycle.

Lifecycle: `new → acknowledged → resolved`, or `new → resolved`; `resolved` is final. Each step
records who took it, when, and an optional note, under the event's row lock so that two people
acting at once get one success and one clear refusal.
"""

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from iothub.devices.models import Device
from iothub.events.models import Event, EventStatus
from iothub.rules.actions import NOTIFICATION, STOP_MACHINE, action_shape_problem, rule_actions
from iothub.rules.conditions import OPERATOR_SYMBOLS, decimal_text, metric_decimal
from iothub.rules.machine import RESOLVE, UPDATE, Action, Alarm, Silence, State, alarm_of, transition
from iothub.rules.models import Rule
from iothub.rules.services import rule_states_lock, rule_states_write, rule_trigger_claim
from iothub.telemetry.services import StoredReading

MAX_NOTE_LENGTH = 2000
# How each action type's outbox rows are written for an event, registered by the app that owns
# the outbox when Django starts (notifications, machines), which sit above this one.
Enqueuer = Callable[..., object]  # (*, event, action_index, action)
_enqueuers: dict[str, Enqueuer] = {}


def action_enqueuer_register(kind: str, enqueue: Enqueuer) -> None:
    _enqueuers[kind] = enqueue


def event_actions_enqueue(*, event: Event, actions: list) -> None:
    """The outbox rows of a new event's actions (notification deliveries, machine commands),
    inside the transaction that raised it; an action refused when the event was raised is skipped
    (its entry says why)."""
    for index, (action, result) in enumerate(zip(actions, event.execution_results, strict=True)):
        if result["status"] != RESULT_PENDING:
            continue
        _enqueuers[action["type"]](event=event, action_index=index, action=action)


RESULT_PENDING = "pending"
RESULT_COMPLETED = "completed"
RESULT_FAILED = "failed"


def execution_time_text(moment: datetime) -> str:
    """A time in an `execution_results` entry, as the spec writes it: `2025-01-21T10:00:08Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def metric_label(metric: str) -> str:
    """`vibration` -> `Vibration`, `operating_hours` -> `Operating hours`."""
    return metric.replace("_", " ").capitalize()


def event_message(*, rule: Rule, device: Device, metric: str, value: Decimal, unit: str | None) -> str:
    """What a person reads: `Vibration 16.2 mm_s > 15 on "Press 3" (Workshop A), rule "High vibration"`."""
    reading = f"{metric_label(metric)} {decimal_text(value)}" + (f" {unit}" if unit else "")
    condition = f"{OPERATOR_SYMBOLS[rule.operator]} {decimal_text(rule.threshold)}"
    where = f'"{device.name}"' + (f" ({device.location})" if device.location else "")
    return f'{reading} {condition} on {where}, rule "{rule.name}"'


def _initial_result(action: object) -> dict:
    """An action's first `execution_results` entry: its type, what it acts on, `pending`.

    An action the API would have refused (a row written directly in SQL) is `failed` at once with
    the reason, rather than failing the ingest of the reading that triggered it.
    """
    problem = action_shape_problem(action)
    if problem is not None:
        kind = action.get("type") if isinstance(action, dict) else None
        return {"type": kind, "status": RESULT_FAILED, "error": f"invalid action: {problem}"}
    entry = {"type": action["type"]}
    if action["type"] == NOTIFICATION:
        entry["template_id"] = action["template_id"]
    elif action["type"] == STOP_MACHINE:
        entry["machine_id"] = action["machine_id"]
    entry["status"] = RESULT_PENDING
    return entry


def event_raise(*, rule: Rule, device: Device, reading: StoredReading, metric: str, value: Decimal) -> Event:
    """Write the event a rule raised on a reading, inside the ingest transaction.

    The event's time is the reading's (a buffered reading raises an event dated when it happened);
    `metadata` keeps the reading, the rule and the device as they were at that moment, so the
    event still reads right after the rule is edited or the telemetry row is dropped by retention.
    """
    device_type = device.device_type
    unit = device_type.metric_unit if metric == device_type.metric_name else None
    metadata = {
        "reading": {
            "telemetry_id": reading.id,
            "timestamp": reading.timestamp.isoformat(),
            "metric": metric,
            "value": reading.metrics[metric],
            "unit": unit,
            "payload": reading.payload,
        },
        **_rule_and_device(rule=rule, device=device, metric=metric),
        "raised_at": timezone.now().isoformat(),
    }
    event = Event(
        rule=rule,
        telemetry_id=reading.id,
        timestamp=reading.timestamp,
        severity=rule.severity,
        message=event_message(rule=rule, device=device, metric=metric, value=value, unit=unit),
        execution_results=[_initial_result(action) for action in rule_actions(rule)],
        metadata=metadata,
        last_value=reading.metrics[metric],
        last_seen_at=reading.timestamp,
        last_telemetry_id=reading.id,
        **_follow_ups(rule),
    )
    event.save(force_insert=True)
    return event


def _rule_and_device(*, rule: Rule, device: Device, metric: str) -> dict:
    """The rule and the device as they are when the event is raised, for its `metadata`."""
    device_type = device.device_type
    snapshot = {
        "rule": {
            "id": str(rule.id),
            "name": rule.name,
            "metric": metric,
            "operator": rule.operator,
            "threshold": str(rule.threshold),
            "cooldown_minutes": rule.cooldown_minutes,
            "severity": rule.severity,
        },
        "device": {
            "id": str(device.id),
            "name": device.name,
            "serial_number": device.serial_number,
            "location": device.location,
            "status": device.status,
            "device_type": {
                "id": str(device_type.id),
                "name": device_type.name,
                "metric_name": device_type.metric_name,
                "metric_unit": device_type.metric_unit,
            },
        },
    }
    if rule.operator == "nodata":
        snapshot["rule"]["duration_seconds"] = rule.duration_seconds
    return snapshot


def _follow_ups(rule: Rule) -> dict:
    """When the worker reminds and escalates a new event of the rule, counted from now (the hub's
    clock, not the reading's: a buffered reading's event is not overdue the moment it arrives)."""
    now = timezone.now()
    due = {}
    if rule.reminder_minutes:
        due["next_reminder_at"] = now + timedelta(minutes=rule.reminder_minutes)
    escalation = rule.escalation if isinstance(rule.escalation, dict) else None
    if escalation and isinstance(escalation.get("after_minutes"), int):
        due["escalation_due_at"] = now + timedelta(minutes=escalation["after_minutes"])
    return due


def event_raise_silence(*, rule: Rule, device: Device, metric: str, silent_since: datetime | None) -> Event:
    """Write the event of a nodata rule: no reading of `metric` since `silent_since`. Dated now."""
    now = timezone.now()
    where = f'"{device.name}"' + (f" ({device.location})" if device.location else "")
    since = f" since {silent_since.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%SZ')}" if silent_since else ""
    event = Event(
        rule=rule,
        telemetry_id=None,
        timestamp=now,
        severity=rule.severity,
        message=f'No {metric_label(metric).lower()} reading from {where}{since}, rule "{rule.name}"',
        execution_results=[_initial_result(action) for action in rule_actions(rule)],
        metadata={
            "silence": {"metric": metric, "since": silent_since.isoformat() if silent_since else None},
            **_rule_and_device(rule=rule, device=device, metric=metric),
            "raised_at": now.isoformat(),
        },
        last_seen_at=None,
        **_follow_ups(rule),
    )
    event.save(force_insert=True)
    return event


def event_occurrence_record(*, event_id: int, telemetry_id: int | None, at: datetime, value: object) -> bool:
    """Fold a further breach into an open event (`dedupe_while_open`): one more occurrence, the
    newest value and time. False if the event is resolved meanwhile (then the caller raises anew)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE events
            SET occurrences = occurrences + 1,
                last_value = %(value)s::jsonb,
                last_seen_at = GREATEST(last_seen_at, %(at)s),
                last_telemetry_id = CASE WHEN last_seen_at IS NULL OR %(at)s >= last_seen_at
                                         THEN %(telemetry_id)s ELSE last_telemetry_id END
            WHERE id = %(event_id)s AND status <> 'resolved'
            """,
            {"event_id": event_id, "telemetry_id": telemetry_id, "at": at, "value": json.dumps(value, default=str)},
        )
        return cursor.rowcount == 1


def event_resolve_by_system(*, event_id: int, telemetry_id: int | None, at: datetime, value: object, why: str) -> bool:
    """Resolve an open event on the hub's own judgement (auto-resolve, a nodata rule hearing again),
    naming the reading that cleared it. False if it was resolved already."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE events
            SET status = 'resolved', resolved_at = now(), resolved_by_id = NULL, resolved_by_system = true,
                resolved_telemetry_id = %(telemetry_id)s, resolved_value = %(value)s::jsonb,
                resolution_note = %(why)s, next_reminder_at = NULL, escalation_due_at = NULL
            WHERE id = %(event_id)s AND status <> 'resolved'
            """,
            {
                "event_id": event_id,
                "telemetry_id": telemetry_id,
                "value": json.dumps(value, default=str),
                "why": f"{why} (reading at {at.astimezone(UTC).isoformat()})",
            },
        )
        return cursor.rowcount == 1


def event_action_result_update(*, event_id: int, index: int, changes: dict) -> None:
    """Merge `changes` into entry `index` of the event's `execution_results`.

    One statement under the row lock, so workers finishing different actions of the same event
    at the same moment cannot overwrite each other's entries.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE events
            SET execution_results = jsonb_set(
                execution_results, ARRAY[%(index)s::text], (execution_results -> %(index)s) || %(changes)s::jsonb
            )
            WHERE id = %(event_id)s AND jsonb_array_length(execution_results) > %(index)s
            """,
            {"event_id": event_id, "index": index, "changes": json.dumps(changes, default=str)},
        )
        if cursor.rowcount != 1:
            raise LookupError(f"event {event_id} has no action at index {index}")


class EventTransitionRefused(Exception):
    """The event's status does not allow the step asked for; the message says why."""


def _note_clean(note: str | None) -> str | None:
    if note is None:
        return None
    note = note.strip()
    if len(note) > MAX_NOTE_LENGTH:
        raise ValueError(f"the note is {len(note)} characters long; the limit is {MAX_NOTE_LENGTH}")
    return note or None


@transaction.atomic
def event_acknowledge(*, event_id: int, user, note: str | None = None) -> Event:
    """`new → acknowledged`: someone has seen the event and is on it."""
    note = _note_clean(note)
    event = Event.objects.select_for_update(of=("self",)).get(pk=event_id)
    if event.status == EventStatus.ACKNOWLEDGED:
        who = f" by {event.acknowledged_by.get_username()}" if event.acknowledged_by else ""
        raise EventTransitionRefused(f"Event {event.id} is already acknowledged{who}.")
    if event.status == EventStatus.RESOLVED:
        raise EventTransitionRefused(f"Event {event.id} is resolved; a resolved event is final.")
    event.status = EventStatus.ACKNOWLEDGED
    event.acknowledged_at = timezone.now()
    event.acknowledged_by = user
    event.acknowledgement_note = note
    # Acknowledging stops the reminders and the escalation.
    event.next_reminder_at = event.escalation_due_at = None
    event.save(
        update_fields=[
            "status",
            "acknowledged_at",
            "acknowledged_by",
            "acknowledgement_note",
            "next_reminder_at",
            "escalation_due_at",
        ]
    )
    return event


@transaction.atomic
def event_resolve(*, event_id: int, user, note: str | None = None) -> Event:
    """`new → resolved` or `acknowledged → resolved`: the cause is dealt with. Final."""
    note = _note_clean(note)
    event = Event.objects.select_for_update(of=("self",)).get(pk=event_id)
    if event.status == EventStatus.RESOLVED:
        who = f" by {event.resolved_by.get_username()}" if event.resolved_by else ""
        raise EventTransitionRefused(f"Event {event.id} is already resolved{who}; a resolved event is final.")
    event.status = EventStatus.RESOLVED
    event.resolved_at = timezone.now()
    event.resolved_by = user
    event.resolution_note = note
    event.next_reminder_at = event.escalation_due_at = None
    event.save(
        update_fields=[
            "status",
            "resolved_at",
            "resolved_by",
            "resolution_note",
            "next_reminder_at",
            "escalation_due_at",
        ]
    )
    return event


# ------------------------------------------------------------------------------------------------
# What a rule's state machine decided, carried out (ingest on readings, the worker on silence)
# ------------------------------------------------------------------------------------------------


def alarm_states_lock(*, rule_ids: list, skip_locked: bool = False) -> dict:
    """The rules' states locked (`rule_states_lock`), then their open events, in id order, so that
    updating or resolving one cannot wait in a cycle with the worker's delivery records (which lock
    events in id order); an event resolved or deleted meanwhile is no open event."""
    states = rule_states_lock(rule_ids=rule_ids, skip_locked=skip_locked)
    open_ids = sorted({s.open_event for s in states.values() if s.open_event})
    if not open_ids:
        return states
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM events WHERE id = ANY(%s) AND status <> 'resolved' ORDER BY id FOR NO KEY UPDATE",
            [open_ids],
        )
        alive = {row[0] for row in cursor.fetchall()}
    return {
        i: s if not s.open_event or s.open_event in alive else replace(s, open_event=None) for i, s in states.items()
    }


def alarm_action_apply(
    *,
    rule: Rule,
    alarm: Alarm,
    device: Device,
    metric: str,
    before: State,
    after: State,
    action: Action,
    reading: StoredReading | None,
) -> tuple[State, Event | None]:
    """Carry out `action`, which `transition(alarm, before, ...)` returned with `after`; return the
    state to go on from and the event raised, if one was. Runs in the transaction that holds the
    rule's state (a stateful rule's row lock; a spec-only rule's device lock)."""
    if action.kind == UPDATE:
        if event_occurrence_record(
            event_id=after.open_event,
            telemetry_id=action.reading.telemetry_id,
            at=action.at,
            value=action.reading.value,
        ):
            return after, None
        # Resolved by someone meanwhile: the breach is judged again with no open event.
        after, action = transition(alarm, replace(before, open_event=None), action.reading)
        if action is None:
            return after, None
    if action.kind == RESOLVE:
        event_resolve_by_system(
            event_id=before.open_event,
            telemetry_id=action.reading.telemetry_id,
            at=action.at,
            value=action.reading.value,
            why="resolved by the hub: the device reports again" if alarm.nodata else "resolved by the hub: cleared",
        )
        return after, None
    # RAISE, under the cooldown claimed atomically: concurrent messages raise one event.
    if not rule_trigger_claim(rule_id=rule.id, at=action.at):
        return replace(after, last_triggered_at=before.last_triggered_at, open_event=before.open_event), None
    rule.last_triggered_at = action.at
    if reading is None:
        silent_since = before.last_reading_at  # a nodata rule's last reading (or its creation)
        event = event_raise_silence(rule=rule, device=device, metric=metric, silent_since=silent_since)
    else:
        value = metric_decimal(reading.metrics[metric])
        event = event_raise(rule=rule, device=device, reading=reading, metric=metric, value=value)
    event_actions_enqueue(event=event, actions=rule_actions(rule))
    return replace(after, open_event=event.id), event


# ------------------------------------------------------------------------------------------------
# Nodata rules, looked at by the worker
# ------------------------------------------------------------------------------------------------

# Enabled nodata rules whose silence has lasted `duration_seconds` and that are not firing yet; a
# rule that never heard from its device counts from its creation.
_SILENT_RULES_SQL = """
    SELECT r.id, COALESCE(s.last_reading_at, r.created_at)
    FROM rules r LEFT JOIN rule_states s ON s.rule_id = r.id
    WHERE r.is_enabled AND r.operator = 'nodata' AND r.duration_seconds > 0
      AND COALESCE(s.phase, 'ok') <> 'firing'
      AND COALESCE(s.last_reading_at, r.created_at) <= %(now)s - make_interval(secs => r.duration_seconds)
    ORDER BY r.id
    LIMIT %(limit)s
"""


def nodata_rules_evaluate(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Raise the event of every nodata rule whose device has sent no reading of the metric for the
    rule's `duration_seconds`; how many were raised. Runs in the caller's transaction; a rule whose
    state another transaction holds (ingest storing a reading of it) is left for the next look."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_SILENT_RULES_SQL, {"now": now, "limit": limit})
        silent = dict(cursor.fetchall())
    if not silent:
        return 0
    states = alarm_states_lock(rule_ids=list(silent), skip_locked=True)
    rule_states_make_missing = [rule_id for rule_id in silent if rule_id not in states]
    if rule_states_make_missing:
        # Rules written without a state row (by SQL): give them one, judged at the next look.
        rule_states_lock(rule_ids=rule_states_make_missing)
    rules = Rule.objects.select_related("device", "device__device_type").in_bulk(list(states))
    changed: dict = {}
    raised = 0
    for rule_id, state in states.items():
        rule = rules[rule_id]
        alarm = alarm_of(rule)
        heard = replace(state, last_reading_at=silent[rule_id])
        after, action = transition(alarm, heard, Silence(now))
        after = replace(after, last_reading_at=state.last_reading_at)
        if action is not None:
            after, event = alarm_action_apply(
                rule=rule,
                alarm=alarm,
                device=rule.device,
                metric=rule.metric or rule.device.device_type.metric_name,
                before=heard,
                after=after,
                action=action,
                reading=None,
            )
            raised += event is not None
        if after != state:
            changed[rule_id] = after
    rule_states_write(states=changed)
    return raised

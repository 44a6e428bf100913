"""Writes to events: raising them, recording what their actions did, their lifecycle.

Lifecycle: `new → acknowledged → resolved`, or `new → resolved`; `resolved` is final. Each step
records who took it, when, and an optional note, under the event's row lock so that two people
acting at once get one success and one clear refusal.
"""

import json
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from iothub.devices.models import Device
from iothub.events.models import Event, EventStatus
from iothub.rules.actions import NOTIFICATION, STOP_MACHINE, action_shape_problem, rule_actions
from iothub.rules.conditions import OPERATOR_SYMBOLS, decimal_text
from iothub.rules.models import Rule
from iothub.telemetry.services import StoredReading

MAX_NOTE_LENGTH = 2000
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
    )
    event.save(force_insert=True)
    return event


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
    event.save(update_fields=["status", "acknowledged_at", "acknowledged_by", "acknowledgement_note"])
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
    event.save(update_fields=["status", "resolved_at", "resolved_by", "resolution_note"])
    return event

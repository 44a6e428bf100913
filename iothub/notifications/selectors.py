"""Reads for notifications: what an event's messages are rendered from, and the deliveries."""

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db.models import QuerySet

from iothub.events.models import Event
from iothub.notifications.models import NotificationDelivery, NotificationTemplate
from iothub.rules.actions import action_id_valid
from iothub.rules.conditions import OPERATOR_SYMBOLS, decimal_text


def number_text(value: object) -> str:
    """A reading or threshold as people write it: 25 rather than 25.0000, never 2.5E+1."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        try:
            return decimal_text(Decimal(value))
        except InvalidOperation:
            return value
    return str(value)


def timestamp_text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_url(event_id: int) -> str:
    return f"{settings.IOTHUB_PUBLIC_URL}/api/v1/events/{event_id}/"


def event_snapshot(event: Event, key: str) -> dict:
    """A part of the event's metadata (`reading`, `rule`, `device`), as `event_raise` wrote it
    when the event was raised; empty for an event without one (written directly in SQL)."""
    metadata = event.metadata if isinstance(event.metadata, dict) else {}
    part = metadata.get(key)
    return part if isinstance(part, dict) else {}


def notification_context(*, event: Event) -> dict[str, str]:
    """The value of every placeholder for this event, as text.

    From the event's snapshot of the reading, rule and device as they were when it was raised, so a
    message rendered later (a preview, a manual retry) says what happened then; the current rows
    fill in what an event without a snapshot lacks (reading them costs a query unless loaded).
    """
    reading, rule_snapshot, device_snapshot = (event_snapshot(event, key) for key in ("reading", "rule", "device"))
    type_snapshot = device_snapshot.get("device_type") if isinstance(device_snapshot.get("device_type"), dict) else {}
    rule = event.rule
    device = rule.device
    device_type = device.device_type
    metric = reading.get("metric") or rule_snapshot.get("metric") or rule.metric or device_type.metric_name
    if "unit" in reading:
        unit = reading["unit"] or ""
    else:
        unit = device_type.metric_unit if metric == device_type.metric_name else ""
    operator = rule_snapshot.get("operator", rule.operator)
    return {
        "device_name": device_snapshot.get("name", device.name),
        "serial_number": device_snapshot.get("serial_number", device.serial_number),
        "location": device_snapshot.get("location", device.location) or "",
        "device_type": type_snapshot.get("name", device_type.name),
        "metric": metric,
        "value": number_text(reading.get("value")),
        "unit": unit,
        "operator": OPERATOR_SYMBOLS.get(operator, operator),
        "threshold": number_text(rule_snapshot.get("threshold", rule.threshold)),
        "rule_name": rule_snapshot.get("name", rule.name),
        "severity": event.severity,
        "event_id": str(event.id),
        "event_message": event.message,
        "timestamp": timestamp_text(event.timestamp),
        "event_url": event_url(event.id),
    }


def event_with_context_relations(*, event_id: int) -> Event:
    """The event with what `notification_context` reads, in one query."""
    return Event.objects.select_related("rule__device__device_type").get(id=event_id)


def notification_delivery_list() -> QuerySet[NotificationDelivery]:
    return NotificationDelivery.objects.select_related("template").order_by("-created_at", "-id")


def notification_template_references_problems(actions: list[tuple[int, dict]]) -> list[tuple[int, str]]:
    """The rules' check of what their notification actions name (registered with
    `iothub.rules.actions` by `NotificationsConfig.ready`): each `template_id` must be an existing,
    active template. Given (position, action) pairs; returns (position, message) pairs."""
    refs: dict[int, list[int]] = {}
    for index, action in actions:
        if action_id_valid(action.get("template_id")):
            refs.setdefault(action["template_id"], []).append(index)
    if not refs:
        return []
    active = dict(NotificationTemplate.objects.filter(id__in=refs).values_list("id", "is_active"))
    problems: list[tuple[int, str]] = []
    for template_id, indexes in refs.items():
        for index in indexes:
            if template_id not in active:
                problems.append((index, f"[{index}].template_id: notification template {template_id} does not exist"))
            elif not active[template_id]:
                problems.append((index, f"[{index}].template_id: notification template {template_id} is not active"))
    return problems

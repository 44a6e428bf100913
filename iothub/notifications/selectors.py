"""Reads for notifications: what an event's messages are rendered from, and the deliveries."""

from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import QuerySet

from iothub.events.models import Event
from iothub.notifications.models import NotificationDelivery
from iothub.rules.models import Operator

OPERATOR_SYMBOLS: dict[str, str] = {
    Operator.GT: ">",
    Operator.LT: "<",
    Operator.GTE: ">=",
    Operator.LTE: "<=",
    Operator.EQ: "=",
    Operator.NEQ: "!=",
}


def number_text(value: object) -> str:
    """A reading or threshold as people write it: 25 rather than 25.0000, never 2.5E+1."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in {"-0", ""} else text
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def timestamp_text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_url(event_id: int) -> str:
    return f"{settings.IOTHUB_PUBLIC_URL}/api/v1/events/{event_id}/"


def _reading(event: Event, metric: str) -> tuple[object, str | None]:
    """The triggering value (and unit, if recorded) from the event's telemetry snapshot."""
    metadata = event.metadata if isinstance(event.metadata, dict) else {}
    if "value" in metadata:
        return metadata["value"], metadata.get("unit")
    for holder in (metadata.get("payload"), metadata.get("telemetry"), metadata):
        if isinstance(holder, dict) and isinstance(holder.get("metrics"), dict) and metric in holder["metrics"]:
            return holder["metrics"][metric], None
    return None, None


def notification_context(*, event: Event) -> dict[str, str]:
    """The value of every placeholder for this event, as text. Reads the event's rule, device and
    device type (one query when they are not loaded yet) and its telemetry snapshot."""
    rule = event.rule
    device = rule.device
    device_type = device.device_type
    metadata = event.metadata if isinstance(event.metadata, dict) else {}
    metric = metadata.get("metric") or rule.metric or device_type.metric_name
    value, unit = _reading(event, metric)
    if unit is None:
        unit = device_type.metric_unit if metric == device_type.metric_name else ""
    return {
        "device_name": device.name,
        "serial_number": device.serial_number,
        "location": device.location or "",
        "device_type": device_type.name,
        "metric": metric,
        "value": number_text(value),
        "unit": unit,
        "operator": OPERATOR_SYMBOLS.get(rule.operator, rule.operator),
        "threshold": number_text(rule.threshold),
        "rule_name": rule.name,
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

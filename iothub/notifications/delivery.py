"""Notification deliveries as an outbox of the worker's engine (`iothub.outbox`, docs/worker.md).

The queue is the spec's `notification_deliveries` table: a delivery is due when it is `pending`
and its `next_attempt_at` (an additive column, now() for a new row) has come. The engine claims
the most urgent due deliveries (lowest priority number, then oldest) in batches with `FOR UPDATE
SKIP LOCKED`, sends them concurrently and records them in one statement. What is this outbox's own:

- what sending needs, read with the claim: the event, its rule, device and device type, and the
  template's retry settings (one query for the batch);
- `send`: the recipient's channel (`channels/`): webhooks on the event loop, email and SMS on
  threads;
- the retry schedule: `retry_delay_minutes` after a failed attempt, at most `retry_count` retries
  (the spec's defaults for NULLs); a permanent failure fails at once;
- the event's entry: when no delivery of an event's notification action is pending any more, it
  becomes the spec's `completed` entry with `sent_count` and `failed_count`;
- one log line and one count per attempt, with the ids to find it by.

Every retry of a delivery carries the same idempotency key (`webhook-id`, the email's Message-ID).
"""

import asyncio
import inspect
import json
import logging
from datetime import timedelta

from django.conf import settings

from iothub import metrics
from iothub.devices.models import Device, DeviceType
from iothub.events.models import Event
from iothub.notifications.channels import SENDERS, DeliveryError, OutgoingMessage, webhook
from iothub.notifications.models import DeliveryStatus, NotificationDelivery, NotificationTemplate
from iothub.notifications.selectors import event_snapshot, notification_context, timestamp_text
from iothub.notifications.services import (
    DEFAULT_RETRY_COUNT,
    DELIVERY_CHANNEL,
    ActionProgress,
    delivery_retry_delay_seconds,
    notification_action_entry,
    notification_action_indexes,
)
from iothub.outbox import ActionState, Outcome, Queue
from iothub.rules.models import Rule

logger = logging.getLogger(__name__)

# What sending a delivery needs, read with the claim. The order walks
# idx_notification_delivery_queue (status, priority, created_at): no tie-break on id, which would
# make PostgreSQL sort every row of the first (priority, created_at) group, and one ingest
# transaction enqueues many rows with the same created_at.
QUEUE = Queue(
    table="notification_deliveries",
    channel=DELIVERY_CHANNEL,
    done_status=DeliveryStatus.SENT,
    error_column="error_message",
    done_at_column="sent_at",
    order_by="q.priority, q.created_at",
    action_key="template_id",
    columns="""
        q.id, q.event_id, q.template_id, q.recipient_type, q.recipient_address, q.recipient_name,
        q.rendered_message, q.priority, q.attempt_count, q.created_at,
        t.retry_count, t.retry_delay_minutes,
        e.rule_id, e.telemetry_id, e.timestamp, e.severity, e.message, e.metadata, e.status,
        r.device_id, r.name, r.operator, r.threshold, r.metric,
        v.device_type_id, v.name, v.serial_number, v.location,
        y.name, y.metric_name, y.metric_unit
    """,
    joins="""
        JOIN notification_templates t ON t.id = q.template_id
        JOIN events e ON e.id = q.event_id
        JOIN rules r ON r.id = e.rule_id
        JOIN devices v ON v.id = r.device_id
        JOIN device_types y ON y.id = v.device_type_id
    """,
)


def _delivery(row: tuple, events: dict[int, Event]) -> NotificationDelivery:
    """A claimed row as the models the payload and the message are built from (no query); the
    deliveries of one event share its Event."""
    (
        delivery_id, event_id, template_id, recipient_type, recipient_address, recipient_name,
        rendered_message, priority, attempt_count, created_at,
        retry_count, retry_delay_minutes,
        rule_id, telemetry_id, timestamp, severity, message, metadata, event_status,
        device_id, rule_name, operator, threshold, metric,
        device_type_id, device_name, serial_number, location,
        device_type_name, metric_name, metric_unit,
    ) = row  # fmt: skip
    event = events.get(event_id)
    if event is None:
        device_type = DeviceType(
            id=device_type_id, name=device_type_name, metric_name=metric_name, metric_unit=metric_unit
        )
        device = Device(
            id=device_id, device_type=device_type, name=device_name, serial_number=serial_number, location=location
        )
        rule = Rule(id=rule_id, device=device, name=rule_name, operator=operator, threshold=threshold, metric=metric)
        event = events[event_id] = Event(
            id=event_id,
            rule=rule,
            telemetry_id=telemetry_id,
            timestamp=timestamp,
            severity=severity,
            message=message,
            # psycopg decodes jsonb; Django's own connection hands it over as text.
            metadata=json.loads(metadata) if isinstance(metadata, str) else metadata,
            status=event_status,
        )
    return NotificationDelivery(
        id=delivery_id,
        event=event,
        template=NotificationTemplate(id=template_id, retry_count=retry_count, retry_delay_minutes=retry_delay_minutes),
        recipient_type=recipient_type,
        recipient_address=recipient_address,
        recipient_name=recipient_name,
        rendered_message=rendered_message,
        status=DeliveryStatus.PENDING,
        priority=priority,
        attempt_count=attempt_count,
        created_at=created_at,
    )


def idempotency_key(delivery: NotificationDelivery) -> str:
    """The delivery's id for receivers: the same on every retry, distinct for every row (the
    creation time guards against ids reused after a database is rebuilt)."""
    return f"ntf_{delivery.id}_{int(delivery.created_at.timestamp())}"


def webhook_payload(*, delivery: NotificationDelivery, event: Event) -> dict:
    """The webhook body: the event, what triggered it, and this notification. Built from the rows,
    so every retry of a delivery sends the same body (only the event's status may have moved on)."""
    context = notification_context(event=event)
    rule, device = event.rule, event.rule.device
    return {
        "type": "event.raised",
        "timestamp": timestamp_text(event.timestamp),
        "data": {
            "event": {
                "id": event.id,
                "url": context["event_url"],
                "timestamp": context["timestamp"],
                "severity": event.severity,
                "status": event.status,
                "message": event.message,
                "telemetry_id": event.telemetry_id,
            },
            # As they were when the event was raised (the event's snapshot).
            "rule": {
                "id": str(rule.id),
                "name": context["rule_name"],
                "metric": context["metric"],
                "operator": event_snapshot(event, "rule").get("operator", rule.operator),
                "threshold": context["threshold"],
            },
            "device": {
                "id": str(device.id),
                "name": context["device_name"],
                "serial_number": context["serial_number"],
                "location": context["location"] or None,
                "device_type": context["device_type"],
            },
            "reading": {"metric": context["metric"], "value": context["value"], "unit": context["unit"]},
            "notification": {
                "delivery_id": delivery.id,
                "template_id": delivery.template_id,
                "priority": delivery.priority,
                "recipient_name": delivery.recipient_name,
                "message": delivery.rendered_message,
            },
        },
    }


def _subject(text: str) -> str:
    """An email subject: the message's first line, shortened."""
    first = text.strip().splitlines()[0] if text.strip() else "IoT Hub notification"
    return first if len(first) <= 120 else first[:119] + "…"


def _outgoing(delivery: NotificationDelivery) -> OutgoingMessage:
    event = delivery.event
    return OutgoingMessage(
        delivery_id=delivery.id,
        idempotency_key=idempotency_key(delivery),
        address=delivery.recipient_address,
        name=delivery.recipient_name,
        text=delivery.rendered_message,
        subject=_subject(delivery.rendered_message),
        payload=webhook_payload(delivery=delivery, event=event) if delivery.recipient_type == "webhook" else {},
    )


class DeliveryOutbox:
    """The notification deliveries, as the engine runs them (`iothub.outbox.Outbox`)."""

    queue = QUEUE

    @property
    def concurrency(self) -> int:
        return settings.IOTHUB_NOTIFICATION_CONCURRENCY

    def load(self, rows: list[tuple]) -> list[NotificationDelivery]:
        events: dict[int, Event] = {}
        return [_delivery(row, events) for row in rows]

    async def send(self, delivery: NotificationDelivery) -> None:
        sender = SENDERS.get(delivery.recipient_type)
        if sender is None:
            raise DeliveryError(f"no channel for recipient type {delivery.recipient_type!r}", permanent=True)
        message = _outgoing(delivery)
        if inspect.iscoroutinefunction(sender):
            await sender(message)
        else:
            await asyncio.to_thread(sender, message)

    def retry_delay(self, delivery: NotificationDelivery, attempts: int) -> timedelta | None:
        template = delivery.template
        retries = template.retry_count if template.retry_count is not None else DEFAULT_RETRY_COUNT
        if attempts > retries:
            return None
        return timedelta(seconds=delivery_retry_delay_seconds(template.retry_delay_minutes))

    def describe(self, action: ActionState) -> dict | None:
        if action.pending:
            return None  # the entry says `pending` until the last delivery is final
        progress = ActionProgress(pending=0, sent=action.done, failed=action.failed)
        return notification_action_entry(progress, at=action.last_attempt_at)

    def entries(self, results: list, key: int) -> list[int]:
        return notification_action_indexes(results, key)

    def report(self, delivery: NotificationDelivery, outcome: Outcome) -> None:
        # One log line and one count per attempt, with the ids to find it by (not the address:
        # the delivery row has it).
        metrics.delivery_attempted(channel=delivery.recipient_type, outcome=outcome.label)
        fields = {
            "delivery_id": delivery.id,
            "event_id": delivery.event_id,
            "template_id": delivery.template_id,
            "channel": delivery.recipient_type,
            "attempt": outcome.attempt,
            "outcome": outcome.label,
        }
        if outcome.error is None:
            logger.info("delivery %s sent by %s", delivery.id, delivery.recipient_type, extra=fields)
        else:
            logger.warning(
                "delivery %s %s after attempt %s: %s",
                delivery.id,
                outcome.status,
                outcome.attempt,
                outcome.error,
                extra=fields,
            )

    async def open(self) -> None:
        await webhook.session_open(connections=max(10, 2 * self.concurrency))

    async def close(self) -> None:
        await webhook.session_close()

"""The delivery loop: how queued notification deliveries get sent.

The queue is the spec's `notification_deliveries` table. A delivery is due when it is `pending`
and either was never tried or its last attempt is at least the template's `retry_delay_minutes`
old. Each sender thread repeats, until nothing is due:

1. In one transaction on its own database connection, claim the most urgent due delivery
   (lowest priority number, then oldest) with `FOR UPDATE SKIP LOCKED`, so any number of threads
   and worker processes on any number of hosts each take a different row.
2. Send it through its channel while holding the row lock.
3. Record the attempt (attempt_count, last_attempt_at, and sent_at or error_message): `sent`;
   or `pending` again to be retried after the delay; or `failed` once the template's retry_count
   retries are spent (or the failure is permanent). When an event's notification action has no
   pending delivery left, its `execution_results` entry becomes `completed` with the counts.
4. Commit.

Crash safety: a worker killed between 1 and 4 loses nothing. Its connection dies, PostgreSQL
releases the row lock and rolls back, and the row is due again with its attempt uncounted. The
message may have gone out before the kill, so delivery is at-least-once; the receiver recognises
the repeat by its `webhook-id` (and an email by its Message-ID), which never changes for a row.

Shutdown: `should_stop` is checked before every claim, never during a send, so a stop request
lets every in-flight send finish and be recorded.

The worker runs this as a job: wake on NOTIFY `DELIVERY_CHANNEL`, call `deliveries_send_due`,
then sleep until `deliveries_next_due_at` at the latest.
"""

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import DateTimeField, Func

from iothub.events.models import Event
from iothub.notifications.channels import SENDERS, DeliveryError, OutgoingMessage
from iothub.notifications.models import DeliveryStatus, NotificationDelivery
from iothub.notifications.selectors import event_url, notification_context, number_text, timestamp_text
from iothub.notifications.services import (
    DEFAULT_RETRY_COUNT,
    DEFAULT_RETRY_DELAY_MINUTES,
    DELIVERY_CHANNEL,
    notification_action_record,
)

logger = logging.getLogger(__name__)

__all__ = ["DELIVERY_CHANNEL", "deliveries_next_due_at", "deliveries_send_due", "delivery_send_next"]

# The due condition, shared by the claim and the next-due query. NULLs in the spec's nullable
# columns read as its defaults.
_DUE = """
    d.status = 'pending'
    AND (COALESCE(d.attempt_count, 0) = 0 OR d.last_attempt_at IS NULL
         OR d.last_attempt_at <= now() - make_interval(
                secs => COALESCE(t.retry_delay_minutes, %(default_delay)s) * %(unit)s))
"""

# Walks idx_notification_delivery_queue (status, priority, created_at) in order and stops at the
# first due row no one else holds.
_CLAIM_SQL = f"""
    SELECT d.id
    FROM notification_deliveries d
    JOIN notification_templates t ON t.id = d.template_id
    WHERE {_DUE}
    ORDER BY d.priority, d.created_at, d.id
    LIMIT 1
    FOR UPDATE OF d SKIP LOCKED
"""  # noqa: S608 - constant SQL joined, no input

# Reads idx_notification_delivery_retry (status, attempt_count, last_attempt_at).
_NEXT_DUE_SQL = """
    SELECT min(CASE WHEN COALESCE(d.attempt_count, 0) = 0 OR d.last_attempt_at IS NULL THEN now()
                    ELSE d.last_attempt_at + make_interval(
                        secs => COALESCE(t.retry_delay_minutes, %(default_delay)s) * %(unit)s) END)
    FROM notification_deliveries d
    JOIN notification_templates t ON t.id = d.template_id
    WHERE d.status = 'pending'
"""


class _ClockNow(Func):
    """The wall clock at the moment of the statement; `now()` would be the claim's start, before
    the send."""

    template = "clock_timestamp()"
    output_field = DateTimeField()


def _params() -> dict:
    return {"default_delay": DEFAULT_RETRY_DELAY_MINUTES, "unit": settings.IOTHUB_NOTIFICATION_RETRY_UNIT_SECONDS}


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
                "url": event_url(event.id),
                "timestamp": timestamp_text(event.timestamp),
                "severity": event.severity,
                "status": event.status,
                "message": event.message,
                "telemetry_id": event.telemetry_id,
            },
            "rule": {
                "id": str(rule.id),
                "name": rule.name,
                "metric": context["metric"],
                "operator": rule.operator,
                "threshold": number_text(rule.threshold),
            },
            "device": {
                "id": str(device.id),
                "name": device.name,
                "serial_number": device.serial_number,
                "location": device.location,
                "device_type": device.device_type.name,
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


def _attempt(delivery: NotificationDelivery) -> DeliveryError | None:
    """Send once; the failure, if any. An unexpected exception in a channel is a failure of this
    delivery, not of the loop."""
    sender = SENDERS.get(delivery.recipient_type)
    if sender is None:
        return DeliveryError(f"no channel for recipient type {delivery.recipient_type!r}", permanent=True)
    try:
        sender(_outgoing(delivery))
    except DeliveryError as exc:
        return exc
    except Exception as exc:
        logger.exception("delivery %s: unexpected error in the %s channel", delivery.id, delivery.recipient_type)
        return DeliveryError(f"unexpected error: {type(exc).__name__}: {exc}")
    return None


def _record(delivery: NotificationDelivery, error: DeliveryError | None) -> str:
    """Write the attempt's outcome; returns the new status."""
    attempts = (delivery.attempt_count or 0) + 1
    template = delivery.template
    retries = template.retry_count if template.retry_count is not None else DEFAULT_RETRY_COUNT
    if error is None:
        status, sent_at, message = DeliveryStatus.SENT, _ClockNow(), None
    elif error.permanent or attempts > retries:
        status, sent_at, message = DeliveryStatus.FAILED, None, str(error)
    else:
        status, sent_at, message = DeliveryStatus.PENDING, None, str(error)
    NotificationDelivery.objects.filter(id=delivery.id).update(
        status=status, attempt_count=attempts, last_attempt_at=_ClockNow(), sent_at=sent_at, error_message=message
    )
    if status != DeliveryStatus.PENDING:
        notification_action_record(event_id=delivery.event_id, template_id=delivery.template_id)
    return status


def delivery_send_next() -> bool:
    """Claim, send and record the most urgent due delivery, all in one transaction; False when
    nothing is due."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM_SQL, _params())
            row = cursor.fetchone()
        if row is None:
            return False
        delivery = NotificationDelivery.objects.select_related("template", "event__rule__device__device_type").get(
            id=row[0]
        )
        error = _attempt(delivery)
        status = _record(delivery, error)
    if error is None:
        logger.info("delivery %s sent to %s %s", delivery.id, delivery.recipient_type, delivery.recipient_address)
    else:
        logger.warning(
            "delivery %s %s after attempt %s: %s", delivery.id, status, (delivery.attempt_count or 0) + 1, error
        )
    return True


def _drain(should_stop: Callable[[], bool], limit: int | None, counter: list[int], lock: threading.Lock) -> None:
    while not should_stop():
        with lock:
            if limit is not None and counter[0] >= limit:
                return
            counter[0] += 1
        if not delivery_send_next():
            with lock:
                counter[0] -= 1
            return


def _drain_in_thread(*args) -> None:
    try:
        _drain(*args)
    except Exception:
        # Logged, and the delivery job is simply called again on the next wake-up or timeout.
        logger.exception("delivery sender thread stopped")
    finally:
        # Hand this thread's database connection back to the pool.
        connections.close_all()


def deliveries_send_due(
    *, concurrency: int | None = None, should_stop: Callable[[], bool] = lambda: False, limit: int | None = None
) -> int:
    """Send due deliveries until none is left (or `limit` were handled, or `should_stop()`), with
    `concurrency` sender threads (default IOTHUB_NOTIFICATION_CONCURRENCY), each with its own
    database connection. Returns how many deliveries were attempted."""
    concurrency = concurrency or settings.IOTHUB_NOTIFICATION_CONCURRENCY
    counter, lock = [0], threading.Lock()
    if concurrency == 1:
        _drain(should_stop, limit, counter, lock)
        return counter[0]
    threads = [
        threading.Thread(
            target=_drain_in_thread, args=(should_stop, limit, counter, lock), name=f"delivery-{n}", daemon=True
        )
        for n in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counter[0]


def deliveries_next_due_at() -> datetime | None:
    """When the next pending delivery becomes due (now, if one already is); None if none is pending."""
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_DUE_SQL, _params())
        return cursor.fetchone()[0]

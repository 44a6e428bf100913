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

The worker runs this as `DeliveryJob` (at the end of this file): woken by NOTIFY on
`DELIVERY_CHANNEL`, it keeps IOTHUB_NOTIFICATION_CONCURRENCY sends in flight, and otherwise sleeps
until `deliveries_next_due_at`. `deliveries_send_due` drains the queue in the caller's process
(tests, benchmarks, a shell).
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import datetime

from django.conf import settings
from django.db import connection, connections, transaction

from iothub import metrics
from iothub.db import execute_prepared
from iothub.devices.models import Device, DeviceType
from iothub.events.models import Event
from iothub.notifications.channels import SENDERS, DeliveryError, OutgoingMessage
from iothub.notifications.models import DeliveryStatus, NotificationDelivery, NotificationTemplate
from iothub.notifications.selectors import event_snapshot, notification_context, timestamp_text
from iothub.notifications.services import (
    DEFAULT_RETRY_COUNT,
    DEFAULT_RETRY_DELAY_MINUTES,
    DELIVERY_CHANNEL,
    notification_action_complete,
)
from iothub.rules.models import Rule

logger = logging.getLogger(__name__)

__all__ = ["DELIVERY_CHANNEL", "DeliveryJob", "deliveries_next_due_at", "deliveries_send_due", "delivery_send_next"]

# NULLs in the spec's nullable columns read as its defaults throughout.

# Reads idx_notification_delivery_retry (status, attempt_count, last_attempt_at).
_NEXT_DUE_SQL = """
    SELECT min(CASE WHEN COALESCE(d.attempt_count, 0) = 0 OR d.last_attempt_at IS NULL THEN now()
                    ELSE d.last_attempt_at + make_interval(
                        secs => COALESCE(t.retry_delay_minutes, %(default_delay)s) * %(unit)s) END)
    FROM notification_deliveries d
    JOIN notification_templates t ON t.id = d.template_id
    WHERE d.status = 'pending'
"""

# One round trip records the attempt and counts the action's other pending deliveries (the CTE's
# snapshot still shows this row as it was, hence `id <>`).
_RECORD_SQL = """
    WITH clock AS (SELECT clock_timestamp() AS at),
    attempt AS (
        UPDATE notification_deliveries
        SET status = %(status)s::varchar,
            attempt_count = %(attempts)s::integer,
            last_attempt_at = (SELECT at FROM clock),
            sent_at = CASE WHEN %(status)s::varchar = 'sent' THEN (SELECT at FROM clock) END,
            error_message = %(error)s::text
        WHERE id = %(id)s::bigint
        RETURNING event_id, template_id
    )
    SELECT count(*)
    FROM notification_deliveries d JOIN attempt a ON d.event_id = a.event_id AND d.template_id = a.template_id
    WHERE d.status = 'pending' AND d.id <> %(id)s::bigint
"""


_PENDING_SQL = """
    SELECT count(*) FROM notification_deliveries
    WHERE event_id = %(event_id)s::bigint AND template_id = %(template_id)s::bigint AND status = 'pending'
"""


def _params() -> dict:
    return {"default_delay": DEFAULT_RETRY_DELAY_MINUTES, "unit": settings.IOTHUB_NOTIFICATION_RETRY_UNIT_SECONDS}


# The most urgent due delivery no one else holds, locked, with what sending it needs. Walks
# idx_notification_delivery_queue (status, priority, created_at) in order: no tie-break on id,
# which would make PostgreSQL sort every row of the first (priority, created_at) group, and one
# ingest transaction enqueues many rows with the same created_at. Written as SQL rather than a
# queryset because compiling a six-table select_related costs more CPU than the send itself.
_CLAIM_SQL = """
    SELECT d.id, d.event_id, d.template_id, d.recipient_type, d.recipient_address, d.recipient_name,
           d.rendered_message, d.priority, d.attempt_count, d.created_at,
           t.retry_count,
           e.rule_id, e.telemetry_id, e.timestamp, e.severity, e.message, e.metadata::text, e.status,
           r.device_id, r.name, r.operator, r.threshold, r.metric,
           v.device_type_id, v.name, v.serial_number, v.location,
           y.name, y.metric_name, y.metric_unit
    FROM notification_deliveries d
    JOIN notification_templates t ON t.id = d.template_id
    JOIN events e ON e.id = d.event_id
    JOIN rules r ON r.id = e.rule_id
    JOIN devices v ON v.id = r.device_id
    JOIN device_types y ON y.id = v.device_type_id
    WHERE d.status = 'pending'
      AND (COALESCE(d.attempt_count, 0) = 0 OR d.last_attempt_at IS NULL
           OR d.last_attempt_at <= now() - make_interval(
                  secs => COALESCE(t.retry_delay_minutes, %(default_delay)s::integer) * %(unit)s::integer))
    ORDER BY d.priority, d.created_at
    LIMIT 1
    FOR UPDATE OF d SKIP LOCKED
"""


def _execute(sql: str, params: dict) -> tuple | None:
    """The first row of one of the loop's hot statements, run as a server-side prepared statement
    (`execute_prepared`): planning the six-table claim costs PostgreSQL ten times its execution."""
    rows = execute_prepared(sql, params)
    return rows[0] if rows else None


def _claim() -> NotificationDelivery | None:
    if settings.IOTHUB_NOTIFICATION_ASYNC_COMMIT:
        _execute("SELECT set_config('synchronous_commit', 'off', true)", {})
    row = _execute(_CLAIM_SQL, _params())
    if row is None:
        return None
    (
        delivery_id, event_id, template_id, recipient_type, recipient_address, recipient_name,
        rendered_message, priority, attempt_count, created_at,
        retry_count,
        rule_id, telemetry_id, timestamp, severity, message, metadata, event_status,
        device_id, rule_name, operator, threshold, metric,
        device_type_id, device_name, serial_number, location,
        device_type_name, metric_name, metric_unit,
    ) = row  # fmt: skip
    device_type = DeviceType(id=device_type_id, name=device_type_name, metric_name=metric_name, metric_unit=metric_unit)
    device = Device(
        id=device_id, device_type=device_type, name=device_name, serial_number=serial_number, location=location
    )
    rule = Rule(id=rule_id, device=device, name=rule_name, operator=operator, threshold=threshold, metric=metric)
    event = Event(
        id=event_id,
        rule=rule,
        telemetry_id=telemetry_id,
        timestamp=timestamp,
        severity=severity,
        message=message,
        metadata=json.loads(metadata) if metadata is not None else None,
        status=event_status,
    )
    return NotificationDelivery(
        id=delivery_id,
        event=event,
        template=NotificationTemplate(id=template_id, retry_count=retry_count),
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


def _record(delivery: NotificationDelivery, error: DeliveryError | None) -> tuple[str, int]:
    """Write the attempt's outcome; returns the new status and how many other deliveries of the
    same action are still pending."""
    attempts = (delivery.attempt_count or 0) + 1
    template = delivery.template
    retries = template.retry_count if template.retry_count is not None else DEFAULT_RETRY_COUNT
    if error is None:
        status = DeliveryStatus.SENT
    elif error.permanent or attempts > retries:
        status = DeliveryStatus.FAILED
    else:
        status = DeliveryStatus.PENDING
    (others_pending,) = _execute(
        _RECORD_SQL, {"id": delivery.id, "status": status, "attempts": attempts, "error": str(error) if error else None}
    )
    return status, others_pending


def delivery_send_next() -> bool:
    """Claim, send and record the most urgent due delivery, in one transaction; False when nothing
    is due."""
    with transaction.atomic():
        delivery = _claim()
        if delivery is None:
            return False
        error = _attempt(delivery)
        status, others_pending = _record(delivery, error)
        final = status != DeliveryStatus.PENDING
        if final and not others_pending:
            notification_action_complete(event_id=delivery.event_id, template_id=delivery.template_id)
    if final and others_pending:
        # The others may have been finishing at this same moment, each seeing the rest as pending
        # before the commits. Checking again after this commit closes that gap: whichever sender
        # commits last sees every row final.
        (still_pending,) = _execute(_PENDING_SQL, {"event_id": delivery.event_id, "template_id": delivery.template_id})
        if not still_pending:
            notification_action_complete(event_id=delivery.event_id, template_id=delivery.template_id)
    # One log line and one count per attempt, with the ids to find it by (not the address: the
    # delivery row has it).
    attempt = (delivery.attempt_count or 0) + 1
    outcome = {DeliveryStatus.SENT: "sent", DeliveryStatus.FAILED: "failed"}.get(status, "retry")
    metrics.delivery_attempted(channel=delivery.recipient_type, outcome=outcome)
    fields = {
        "delivery_id": delivery.id,
        "event_id": delivery.event_id,
        "template_id": delivery.template_id,
        "channel": delivery.recipient_type,
        "attempt": attempt,
        "outcome": outcome,
    }
    if error is None:
        logger.info("delivery %s sent by %s", delivery.id, delivery.recipient_type, extra=fields)
    else:
        logger.warning("delivery %s %s after attempt %s: %s", delivery.id, status, attempt, error, extra=fields)
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


def _send_next_in_thread() -> bool:
    """One `delivery_send_next` on a sender thread, whose database connection stays open for the
    next one; a failure closes it, so a broken connection is replaced on the next use."""
    try:
        return delivery_send_next()
    except Exception:
        logger.exception("delivery sender: claim or record failed; the delivery stays queued")
        connection.close()
        return False


class DeliveryJob:
    """The delivery loop as a worker job (`iothub.worker`): the worker LISTENs on `channel`, calls
    `run_once()` while it returns more than 0, and otherwise sleeps until `next_due()` or a NOTIFY.

    Keeps up to IOTHUB_NOTIFICATION_CONCURRENCY sends in flight on a pool of sender threads, each
    send one `delivery_send_next` (claim, send, record, commit) on the thread's own connection.
    `run_once` keeps the pool topped up for a slice of time (`time_slice`, 0.1 s) and returns how many
    deliveries it handled, early when the queue runs dry; if no send finished within the slice it
    waits up to `wait` for one, so the worker does not go to sleep while slots are about to free
    up. The worker's other jobs get their turn between calls, and a stop request is seen there.
    After a stop the worker calls no more: the sends in flight finish and are recorded (the pool's
    threads are joined at interpreter exit), and nothing new is claimed.
    """

    name = "notification_deliveries"
    channel = DELIVERY_CHANNEL

    def __init__(self, *, concurrency: int | None = None, time_slice: float = 0.1, wait: float = 1.0):
        self.concurrency = concurrency or settings.IOTHUB_NOTIFICATION_CONCURRENCY
        self.time_slice = time_slice
        self.wait = wait
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="delivery")
        self._in_flight: set[Future] = set()

    def run_once(self) -> int:
        handled, waited_long = 0, False
        deadline = time.monotonic() + self.time_slice
        while True:
            # Every free slot claims: on an empty queue that is `concurrency` cheap queries.
            while len(self._in_flight) < self.concurrency:
                self._in_flight.add(self._pool.submit(_send_next_in_thread))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if handled or waited_long:
                    return handled
                remaining, waited_long = self.wait, True
            finished, found = self._collect(timeout=remaining)
            handled += found
            if finished and not found:
                return handled  # the sends that finished found nothing due: the queue ran dry

    def _collect(self, *, timeout: float) -> tuple[int, int]:
        """Sends that finished within `timeout`, and how many of them handled a delivery."""
        done, self._in_flight = wait_futures(self._in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
        return len(done), sum(1 for future in done if future.result())

    def next_due(self) -> datetime | None:
        return deliveries_next_due_at()

    def close(self) -> None:
        """Wait for the sends in flight, then close the sender threads' database connections; for
        callers that go on living after the job (tests, a shell)."""
        barrier = threading.Barrier(self.concurrency)

        def release() -> None:
            # Every pool thread blocks here with one of these, so each closes its own connection.
            barrier.wait(timeout=60)
            connection.close()

        for _ in range(self.concurrency):
            self._pool.submit(release)
        self._pool.shutdown(wait=True)
        self._in_flight.clear()

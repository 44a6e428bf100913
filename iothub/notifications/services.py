"""Writes to notifications: templates, deliveries enqueued for an event's actions, and a manual
retry of a failed delivery.

Enqueueing runs inside the ingest transaction (outbox): it writes rows and a NOTIFY, never calls
anything external; the worker's engine sends after commit (`delivery.py`, the deliveries' outbox).
"""

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from iothub.db import Now
from iothub.events.models import Event
from iothub.events.services import (
    RESULT_COMPLETED,
    RESULT_FAILED,
    RESULT_PENDING,
    event_action_result_update,
    execution_time_text,
)
from iothub.notifications.models import DeliveryStatus, NotificationDelivery, NotificationTemplate
from iothub.notifications.selectors import notification_context
from iothub.notifications.templating import TemplateError, template_render, template_validate
from iothub.recipients import Recipient, RecipientError, recipient_parse, recipients_merge, recipients_parse
from iothub.rules.actions import rule_actions
from iothub.rules.models import Rule

logger = logging.getLogger(__name__)

# The LISTEN/NOTIFY channel that wakes the delivery job when deliveries become due.
DELIVERY_CHANNEL = "iothub_notification_deliveries"

# Bounds of a template's numbers (docs/notifications.md). Lower priority numbers are sent first.
PRIORITY_MIN, PRIORITY_MAX = 0, 10
RETRY_COUNT_MIN, RETRY_COUNT_MAX = 0, 10
RETRY_DELAY_MINUTES_MIN, RETRY_DELAY_MINUTES_MAX = 0, 1440

# The spec's defaults, for NULLs in its nullable columns.
DEFAULT_PRIORITY = 1
DEFAULT_RETRY_COUNT = 3
DEFAULT_RETRY_DELAY_MINUTES = 5


def delivery_retry_delay_seconds(retry_delay_minutes: int | None) -> int:
    """Seconds between a failed attempt and the next: the template's `retry_delay_minutes` (NULL:
    the spec's default), in units of IOTHUB_NOTIFICATION_RETRY_UNIT_SECONDS (60 but in tests)."""
    minutes = DEFAULT_RETRY_DELAY_MINUTES if retry_delay_minutes is None else retry_delay_minutes
    return minutes * settings.IOTHUB_NOTIFICATION_RETRY_UNIT_SECONDS


def deliveries_wake() -> None:
    """Tell listening workers there is work; PostgreSQL delivers it when the transaction commits."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [DELIVERY_CHANNEL])


# ------------------------------------------------------------------------------------------------
# Templates
# ------------------------------------------------------------------------------------------------


def notification_template_text_clean(text: str) -> str:
    """A template's message, validated as every face saves it; a `ValidationError` says why."""
    if not text.strip():
        raise ValidationError("The message may not be blank.")
    try:
        template_validate(text)
    except TemplateError as error:
        raise ValidationError(str(error)) from None
    return text


def notification_template_recipients_clean(values: object) -> list[dict]:
    """A template's recipients, validated and normalised (E.164 phones, trimmed names) as every
    face stores them; a `ValidationError` names the entry and key."""
    try:
        parsed = recipients_parse(values, allow_private=settings.IOTHUB_WEBHOOK_ALLOW_PRIVATE)
    except RecipientError as error:
        raise ValidationError(str(error)) from None
    return [recipient.as_json() for recipient in parsed]


def notification_template_create(
    *,
    name: str,
    message_template: str,
    recipients: list[dict],
    priority: int = DEFAULT_PRIORITY,
    retry_count: int = DEFAULT_RETRY_COUNT,
    retry_delay_minutes: int = DEFAULT_RETRY_DELAY_MINUTES,
    is_active: bool = True,
) -> NotificationTemplate:
    """Create a template from validated values (the API validates them with `templating` and
    `recipients`)."""
    return NotificationTemplate.objects.create(
        name=name,
        message_template=message_template,
        recipients=recipients,
        priority=priority,
        retry_count=retry_count,
        retry_delay_minutes=retry_delay_minutes,
        is_active=is_active,
    )


_TEMPLATE_FIELDS = {"name", "message_template", "recipients", "priority", "retry_count", "retry_delay_minutes"}


def notification_template_update(*, template: NotificationTemplate, changes: dict) -> NotificationTemplate:
    """Apply validated changes. Deliveries already enqueued keep their rendered message; pending
    retries follow the template's new retry settings."""
    unknown = set(changes) - _TEMPLATE_FIELDS - {"is_active"}
    if unknown:
        raise ValueError(f"not template fields: {', '.join(sorted(unknown))}")
    for field, value in changes.items():
        setattr(template, field, value)
    with transaction.atomic():
        template.save(update_fields=[*changes, "updated_at"])
        if "retry_delay_minutes" in changes:
            # A retry is due `retry_delay_minutes` after the last attempt, as the row records it.
            delay = timedelta(seconds=delivery_retry_delay_seconds(template.retry_delay_minutes))
            NotificationDelivery.objects.filter(
                template=template, status=DeliveryStatus.PENDING, attempt_count__gt=0, last_attempt_at__isnull=False
            ).update(next_attempt_at=F("last_attempt_at") + delay)
    return template


class TemplateInUse(Exception):
    """The template is named by rules' notification actions; the message lists them."""


def notification_template_delete(*, template: NotificationTemplate) -> None:
    """Delete a template no rule uses. Its deliveries keep it alive too (the database's PROTECT)."""
    using = list(
        Rule.objects.filter(action_config__contains=[{"type": "notification", "template_id": template.id}])
        .order_by("name")
        .values_list("name", flat=True)[:10]
    )
    if using:
        raise TemplateInUse(
            f"Cannot delete: rules use this template ({', '.join(using)}); change their actions first, "
            "or deactivate the template."
        )
    template.delete()


# ------------------------------------------------------------------------------------------------
# Enqueue
# ------------------------------------------------------------------------------------------------


def _recipients_lenient(values: object, *, allow_bare_email: bool, source: str) -> tuple[list[Recipient], list[str]]:
    """The recipients that parse, and a note for each one that does not. Enqueueing runs inside
    ingest and must never fail it: templates and rules are validated when saved, so a bad entry
    here was written past the API (in SQL) or by a looser validation; it is left out and the
    action's entry says so."""
    if not isinstance(values, list):
        return [], [f"{source}: not a list"]
    parsed, problems = [], []
    for index, value in enumerate(values):
        try:
            # Private addresses are checked where the connection is made; keep the entry here.
            parsed.append(
                recipient_parse(value, path=f"{source}[{index}]", allow_bare_email=allow_bare_email, allow_private=True)
            )
        except RecipientError as exc:
            problems.append(str(exc))
    return parsed, problems


def notification_deliveries_enqueue(*, event: Event, action_index: int, action: dict) -> int:
    """Enqueue the deliveries of an event's `notification` action, inside the ingest transaction:
    one row per distinct recipient (the template's, then the action's; a bare string is an email
    address), with the rendered message and the template's priority. Returns the number of rows.

    When nothing can be enqueued (no such template, an inactive one, no recipients) the action's
    `execution_results` entry says so at once, since no delivery will ever finish it.
    """
    template_id = action.get("template_id")
    template = (
        NotificationTemplate.objects.filter(id=template_id).first()
        if isinstance(template_id, int) and not isinstance(template_id, bool)
        else None
    )
    if template is None:
        event_action_result_update(
            event_id=event.id,
            index=action_index,
            changes={
                "status": RESULT_FAILED,
                "error": f"notification template {template_id!r} does not exist",
                "failed_at": execution_time_text(timezone.now()),
            },
        )
        return 0
    if template.is_active is False:
        event_action_result_update(
            event_id=event.id,
            index=action_index,
            changes={"status": "skipped", "reason": f"notification template {template.id} is inactive"},
        )
        return 0

    from_template, template_problems = _recipients_lenient(
        template.recipients, allow_bare_email=False, source="template recipients"
    )
    from_action, action_problems = _recipients_lenient(
        action.get("recipients") or [], allow_bare_email=True, source="action recipients"
    )
    if template_problems or action_problems:
        logger.warning(
            "event %s action %s: recipients left out: %s", event.id, action_index, template_problems + action_problems
        )
        event_action_result_update(
            event_id=event.id, index=action_index, changes={"invalid_recipients": template_problems + action_problems}
        )
    recipients = recipients_merge(from_template, from_action)
    if not recipients:
        event_action_result_update(
            event_id=event.id,
            index=action_index,
            changes={
                "status": RESULT_COMPLETED,
                "sent_count": 0,
                "failed_count": 0,
                "completed_at": execution_time_text(timezone.now()),
            },
        )
        return 0

    message = template_render(template.message_template, notification_context(event=event))
    priority = template.priority if template.priority is not None else DEFAULT_PRIORITY
    NotificationDelivery.objects.bulk_create(
        [
            NotificationDelivery(
                event_id=event.id,
                template_id=template.id,
                recipient_type=recipient.type,
                recipient_address=recipient.address,
                recipient_name=recipient.name,
                rendered_message=message,
                priority=priority,
                attempt_count=0,
            )
            for recipient in recipients
        ]
    )
    deliveries_wake()
    return len(recipients)


# ------------------------------------------------------------------------------------------------
# The execution_results entry of a notification action
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionProgress:
    pending: int
    sent: int
    failed: int


def notification_action_progress(*, event_id: int, template_id: int) -> ActionProgress:
    """How the deliveries of an event's notification action stand.

    Deliveries carry the event and the template, not the action's index: two notification actions
    of one rule with the same template are counted together (docs/notifications.md).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FILTER (WHERE status = 'pending'),
                   count(*) FILTER (WHERE status = 'sent'),
                   count(*) FILTER (WHERE status = 'failed')
            FROM notification_deliveries
            WHERE event_id = %s AND template_id = %s
            """,
            [event_id, template_id],
        )
        pending, sent, failed = cursor.fetchone()
    return ActionProgress(pending=pending, sent=sent, failed=failed)


def notification_action_indexes(results: object, template_id: int) -> list[int]:
    """Which entries of an event's `execution_results` are its notification actions for this
    template (deliveries carry the template, not the action's index)."""
    if not isinstance(results, list):
        return []
    return [
        index
        for index, entry in enumerate(results)
        if isinstance(entry, dict) and entry.get("type") == "notification" and entry.get("template_id") == template_id
    ]


def notification_action_entry(progress: ActionProgress, *, at: datetime) -> dict:
    """The changes an action's deliveries make to its entry: `pending` with the counts so far while
    any is pending, else the spec's completed entry, completed at `at`."""
    if progress.pending:
        return {"status": RESULT_PENDING, "sent_count": progress.sent, "failed_count": progress.failed}
    return {
        "status": RESULT_COMPLETED,
        "sent_count": progress.sent,
        "failed_count": progress.failed,
        "completed_at": execution_time_text(at),
    }


def _action_entry_write(*, event_id: int, template_id: int, progress: ActionProgress) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT execution_results FROM events WHERE id = %s", [event_id])
        row = cursor.fetchone()
    # Django's psycopg setup hands jsonb over as text, for JSONField to decode.
    results = json.loads(row[0]) if row and isinstance(row[0], str) else (row[0] if row else None)
    changes = notification_action_entry(progress, at=timezone.now())
    for index in notification_action_indexes(results, template_id):
        event_action_result_update(event_id=event_id, index=index, changes=changes)


def notification_action_record(*, event_id: int, template_id: int) -> ActionProgress:
    """Write how the event's notification action stands: completed as above, or `pending` with
    the counts so far (after a manual retry reopens it)."""
    progress = notification_action_progress(event_id=event_id, template_id=template_id)
    _action_entry_write(event_id=event_id, template_id=template_id, progress=progress)
    return progress


# ------------------------------------------------------------------------------------------------
# Manual retry
# ------------------------------------------------------------------------------------------------


class DeliveryNotRetryable(Exception):
    """Only a failed delivery can be sent again; the message says why this one cannot."""


def notification_delivery_retry(*, delivery_id: int) -> NotificationDelivery:
    """Put a failed delivery back in the queue with a fresh attempt budget (attempt_count 0; the
    last error stays until the next attempt replaces it). Raises NotificationDelivery.DoesNotExist
    or DeliveryNotRetryable."""
    with transaction.atomic():
        # Only failed rows match, and workers lock only pending ones: this never waits on a send.
        updated = NotificationDelivery.objects.filter(id=delivery_id, status=DeliveryStatus.FAILED).update(
            status=DeliveryStatus.PENDING, attempt_count=0, next_attempt_at=Now()
        )
        delivery = NotificationDelivery.objects.get(id=delivery_id)
        if not updated:
            if delivery.status == DeliveryStatus.SENT:
                when = f" at {delivery.sent_at.isoformat()}" if delivery.sent_at else ""
                raise DeliveryNotRetryable(f"Delivery {delivery_id} was sent{when}; retrying would send it twice.")
            raise DeliveryNotRetryable(
                f"Delivery {delivery_id} is {delivery.status}: it is queued or being sent, so it will be "
                "tried anyway; only a failed delivery can be retried."
            )
        notification_action_record(event_id=delivery.event_id, template_id=delivery.template_id)
        deliveries_wake()
    return delivery


# ------------------------------------------------------------------------------------------------
# Reminders and escalation of unacknowledged events (the worker runs them)
# ------------------------------------------------------------------------------------------------

# Unacknowledged events with a reminder or an escalation due, each locked for this transaction; an
# event another transaction holds (a delivery being recorded, a person acknowledging) waits for the
# next look. The partial indexes `idx_event_reminder_due` / `idx_event_escalation_due` serve it.
_FOLLOW_UPS_DUE_SQL = """
    SELECT id FROM events
    WHERE status = 'new' AND (next_reminder_at <= %(now)s OR escalation_due_at <= %(now)s)
    ORDER BY id
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
"""


def event_follow_ups_send(*, now: datetime | None = None, limit: int = 500) -> int:
    """Queue the reminders and escalations that are due: the rule's notification actions again
    (`reminder_minutes`, at most `reminder_limit` times), or the escalation's template once, each as
    a new `execution_results` entry (`reminder`: its number, or `escalation`: true) with its own
    deliveries. How many were queued. Acknowledging or resolving the event stops both."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_FOLLOW_UPS_DUE_SQL, {"now": now, "limit": limit})
        ids = [row[0] for row in cursor.fetchall()]
    queued = 0
    for event in Event.objects.select_related("rule").filter(id__in=ids).order_by("id"):
        rule = event.rule
        sends: list[tuple[dict, dict]] = []  # (action, the marks of its entry)
        if event.next_reminder_at is not None and event.next_reminder_at <= now:
            number = event.reminders_sent + 1
            actions = [a for a in rule_actions(rule) if isinstance(a, dict) and a.get("type") == "notification"]
            sends += [(action, {"reminder": number}) for action in actions]
            event.reminders_sent = number
            more = rule.reminder_minutes and (rule.reminder_limit is None or number < rule.reminder_limit)
            event.next_reminder_at = now + timedelta(minutes=rule.reminder_minutes) if more else None
        if event.escalation_due_at is not None and event.escalation_due_at <= now:
            escalation = rule.escalation if isinstance(rule.escalation, dict) else {}
            if escalation.get("template_id") is not None:
                sends.append(({"type": "notification", "template_id": escalation["template_id"]}, {"escalation": True}))
            event.escalated_at = now
            event.escalation_due_at = None
        start = len(event.execution_results)
        event.execution_results = [
            *event.execution_results,
            *(
                {"type": "notification", "template_id": action.get("template_id"), **marks, "status": RESULT_PENDING}
                for action, marks in sends
            ),
        ]
        event.save(
            update_fields=[
                "execution_results",
                "reminders_sent",
                "next_reminder_at",
                "escalation_due_at",
                "escalated_at",
            ]
        )
        for offset, (action, _) in enumerate(sends):
            notification_deliveries_enqueue(event=event, action_index=start + offset, action=action)
        queued += len(sends)
    return queued

"""Reminders and escalation of unacknowledged events, through the real worker (its loop with the
delivery outbox and the follow-up task) to a loopback webhook receiver and SMTP server; stopped by
acknowledging. Minutes are not waited for: a test moves an event's due time to now, as the clock
would."""

import json
from datetime import timedelta

import pytest
from django.db import connection

from iothub.events.models import Event
from iothub.notifications.delivery import DeliveryOutbox
from iothub.notifications.models import NotificationDelivery
from iothub.notifications.services import event_follow_ups_send
from iothub.worker.jobs import PeriodicJob
from tests.rules.helpers import make_rule, message, send
from tests.worker.drive import running_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def follow_ups_job() -> PeriodicJob:
    return PeriodicJob("event_follow_ups", every=timedelta(seconds=0.1), task=event_follow_ups_send)


def make_due(event_id: int, column: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE events SET {column} = now() - interval '1 second' WHERE id = %s", [event_id])  # noqa: S608


@pytest.fixture
def alarm(client, device_with_token, webhook_receiver, smtp_server, template_factory):
    """A rule that notifies a webhook, reminds every 10 minutes at most twice, and escalates to an
    email after 30; its event raised by a reading sent to the ingest endpoint."""
    first = template_factory(recipients=[{"type": "webhook", "url": webhook_receiver.url()}])
    boss = template_factory(recipients=[{"type": "email", "address": "boss@plant.example"}])
    device = device_with_token.device
    make_rule(
        device,
        action_config=[{"type": "notification", "template_id": first.id}],
        reminder_minutes=10,
        reminder_limit=2,
        escalation={"after_minutes": 30, "template_id": boss.id},
    )
    (raised,) = send(client, device_with_token.token, message(device, vibration=16.2))["events"]
    return Event.objects.get(pk=raised["id"]), first, boss


def test_reminders_resend_until_the_limit_and_the_escalation_notifies_the_second_template(
    alarm, webhook_receiver, smtp_server
):
    event, first, boss = alarm
    assert event.next_reminder_at is not None and event.escalation_due_at is not None

    with running_worker([DeliveryOutbox()], periodic=[follow_ups_job()]):
        wait_until(lambda: len(webhook_receiver.received) == 1, what="the first notification")
        for number in (1, 2):
            make_due(event.id, "next_reminder_at")
            wait_until(lambda n=number: len(webhook_receiver.received) == 1 + n, what=f"reminder {number}")
        make_due(event.id, "escalation_due_at")
        wait_until(lambda: len(smtp_server.inbox) == 1, what="the escalation email")
        wait_until(lambda: not NotificationDelivery.objects.filter(status="pending").exists(), what="all sent")

    event.refresh_from_db()
    assert (event.reminders_sent, event.next_reminder_at) == (2, None)  # the limit reached: no more
    assert event.escalated_at is not None and event.escalation_due_at is None
    reminders = [e for e in event.execution_results if "reminder" in e]
    escalations = [e for e in event.execution_results if e.get("escalation")]
    assert [e["reminder"] for e in reminders] == [1, 2]
    assert all(e["template_id"] == first.id and e["status"] == "completed" for e in reminders)
    assert [(e["template_id"], e["status"]) for e in escalations] == [(boss.id, "completed")]
    assert smtp_server.inbox[0][1] == ["boss@plant.example"]
    deliveries = NotificationDelivery.objects.filter(event=event)
    assert sorted(d.template_id for d in deliveries) == sorted([first.id] * 3 + [boss.id])
    assert all(json.loads(r.body)["data"]["event"]["id"] == event.id for r in webhook_receiver.received)


def test_acknowledging_stops_reminders_and_escalation(alarm, operator_client, webhook_receiver, smtp_server):
    event, _, _ = alarm

    with running_worker([DeliveryOutbox()], periodic=[follow_ups_job()]):
        wait_until(lambda: len(webhook_receiver.received) == 1, what="the first notification")
        assert operator_client.post(f"/api/v1/events/{event.id}/acknowledge/").status_code == 200
        # Their times come anyway: nothing is sent for an acknowledged event.
        make_due(event.id, "next_reminder_at")
        make_due(event.id, "escalation_due_at")
        for _ in range(5):
            assert event_follow_ups_send() == 0

    event.refresh_from_db()
    assert (event.reminders_sent, event.escalated_at) == (0, None)
    assert len(webhook_receiver.received) == 1 and smtp_server.inbox == []
    assert NotificationDelivery.objects.filter(event=event).count() == 1


def test_the_event_api_shows_reminders_and_escalation(alarm, viewer_client, webhook_receiver):
    event, _, _ = alarm
    make_due(event.id, "next_reminder_at")
    assert event_follow_ups_send() == 1

    body = viewer_client.get(f"/api/v1/events/{event.id}/").json()

    assert body["reminders_sent"] == 1 and body["next_reminder_at"] is not None
    assert body["escalation_due_at"] is not None and body["escalated_at"] is None
    assert [e.get("reminder") for e in body["execution_results"]] == [None, 1]

"""Enqueueing an event's notification action: one row per distinct recipient, rendered, with the
template's priority, and a NOTIFY that reaches listeners at commit."""

import psycopg
import pytest
from django.db import connection, transaction

from iothub.events.models import Event
from iothub.notifications.models import NotificationDelivery
from iothub.notifications.services import DELIVERY_CHANNEL, notification_deliveries_enqueue


def test_one_row_per_distinct_recipient_template_first(template_factory, event_factory):
    template = template_factory(
        priority=3,
        message_template="{severity}: {device_name} {metric}={value} {unit}",
        recipients=[
            {"type": "email", "address": "Ops@Plant.example", "name": "Operations"},
            {"type": "sms", "phone": "+380501234567"},
            {"type": "webhook", "url": "https://hooks.example.com/a"},
        ],
    )
    event = event_factory(
        template,
        recipients=[
            "ops@plant.example",
            "boss@plant.example",
            {"type": "sms", "phone": "+380501234567", "name": "dup"},
            {"type": "webhook", "url": "https://hooks.example.com/b", "name": "B"},
        ],
    )
    rows = list(NotificationDelivery.objects.filter(event=event).order_by("id"))
    assert [(r.recipient_type, r.recipient_address, r.recipient_name) for r in rows] == [
        ("email", "Ops@Plant.example", "Operations"),
        ("sms", "+380501234567", None),
        ("webhook", "https://hooks.example.com/a", None),
        ("email", "boss@plant.example", None),
        ("webhook", "https://hooks.example.com/b", "B"),
    ]
    assert {r.rendered_message for r in rows} == {"critical: Press 3 vibration=30.2 mm_s"}
    assert {(r.priority, r.status, r.attempt_count, r.template_id) for r in rows} == {(3, "pending", 0, template.id)}


def test_returns_the_number_of_rows(template_factory, event_factory):
    template = template_factory(recipients=[{"type": "email", "address": "a@plant.example"}])
    event = event_factory(template, enqueue=False)
    action = {"type": "notification", "template_id": template.id, "recipients": ["b@plant.example"]}
    assert notification_deliveries_enqueue(event=event, action_index=0, action=action) == 2


def test_recipients_that_do_not_parse_are_left_out_and_named_in_the_entry(template_factory, event_factory):
    # A template written past the API (in SQL, say) may hold what the API refuses: a phone without
    # the + of E.164. The others are still sent, and the entry names the one left out.
    template = template_factory(
        recipients=[{"type": "email", "address": "a@plant.example"}, {"type": "sms", "phone": "0501234567"}]
    )
    event = event_factory(template)
    assert list(NotificationDelivery.objects.filter(event=event).values_list("recipient_address", flat=True)) == [
        "a@plant.example"
    ]
    entry = Event.objects.get(id=event.id).execution_results[0]
    assert entry["status"] == "pending"
    assert len(entry["invalid_recipients"]) == 1
    assert "recipients[1].phone: '0501234567' is not an E.164" in entry["invalid_recipients"][0]


def test_phone_numbers_written_with_spaces_are_sent_in_e164(template_factory, event_factory):
    template = template_factory(recipients=[])
    event = event_factory(template, recipients=[{"type": "sms", "phone": "+380 50 123-45-67"}])
    assert NotificationDelivery.objects.get(event=event).recipient_address == "+380501234567"


def test_the_message_says_what_the_event_recorded_even_after_the_device_is_renamed(template_factory, event_factory):
    template = template_factory(message_template="{device_name} {rule_name}", recipients=["x@plant.example"])
    event = event_factory(template, enqueue=False)
    device = event.rule.device
    device.name = "Renamed press"
    device.save()
    event.rule.name = "Renamed rule"
    event.rule.save()
    action = {"type": "notification", "template_id": template.id, "recipients": ["x@plant.example"]}
    notification_deliveries_enqueue(event=Event.objects.get(id=event.id), action_index=0, action=action)
    assert NotificationDelivery.objects.get(event=event).rendered_message == "Press 3 Vibration too high"


def test_missing_template_marks_the_action_failed(template_factory, event_factory):
    template = template_factory()
    event = event_factory(template, enqueue=False)
    count = notification_deliveries_enqueue(
        event=event, action_index=0, action={"type": "notification", "template_id": 987654}
    )
    assert count == 0
    entry = Event.objects.get(id=event.id).execution_results[0]
    assert entry["status"] == "failed"
    assert "987654" in entry["error"]


def test_inactive_template_is_skipped(template_factory, event_factory):
    template = template_factory(recipients=[{"type": "email", "address": "a@plant.example"}], is_active=False)
    event = event_factory(template)
    assert not NotificationDelivery.objects.filter(event=event).exists()
    assert Event.objects.get(id=event.id).execution_results[0]["status"] == "skipped"


def test_no_recipients_completes_the_action_at_once(template_factory, event_factory):
    template = template_factory(recipients=[])
    event = event_factory(template)
    entry = Event.objects.get(id=event.id).execution_results[0]
    assert (entry["status"], entry["sent_count"], entry["failed_count"]) == ("completed", 0, 0)
    assert entry["completed_at"]


@pytest.mark.django_db(transaction=True)
def test_listeners_are_woken_at_commit_and_not_before(template_factory, event_factory):
    template = template_factory(recipients=[{"type": "email", "address": "a@plant.example"}])
    dsn = connection.settings_dict
    with psycopg.connect(
        host=dsn["HOST"], port=dsn["PORT"] or 5432, user=dsn["USER"], dbname=dsn["NAME"], autocommit=True
    ) as listener:
        listener.execute(f"LISTEN {DELIVERY_CHANNEL}")
        with transaction.atomic():
            event_factory(template)
            assert list(listener.notifies(timeout=0.2, stop_after=1)) == []
        assert [n.channel for n in listener.notifies(timeout=2, stop_after=1)] == [DELIVERY_CHANNEL]

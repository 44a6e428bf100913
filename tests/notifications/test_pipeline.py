"""From a reading to the people: a telemetry POST over a rule's threshold, through ingest, the
rule, the event and its deliveries, to the SMTP server and the webhook receiver; the README's
curl example as a test."""

import json

import pytest

from iothub.events.models import Event
from iothub.notifications.delivery import DeliveryOutbox
from iothub.notifications.models import NotificationDelivery
from iothub.rules.models import Rule
from tests.worker.drive import send_due

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_reading_over_the_threshold_reaches_email_and_webhook_and_completes_the_action(
    client, device_with_token, smtp_server, webhook_receiver, template_factory
):
    template = template_factory(
        message_template="{severity}: {rule_name} on {device_name} ({location}): {metric} {value} {unit} {operator} "
        "{threshold}\n{event_url}",
        recipients=[{"type": "webhook", "url": webhook_receiver.url(), "name": "Plant chat"}],
    )
    Rule.objects.create(
        device=device_with_token.device,
        name="Vibration too high",
        operator="gt",
        threshold="25",
        severity="critical",
        action_config=[{"type": "notification", "template_id": template.id, "recipients": ["ops@plant.example"]}],
    )
    body = {"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"vibration": 31.5}}
    response = client.post(
        "/api/v1/telemetry/",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {device_with_token.token}",
    )
    assert response.status_code == 201, response.json()
    (event_summary,) = response.json()["events"]
    event_id = event_summary["id"]
    assert NotificationDelivery.objects.filter(event_id=event_id, status="pending").count() == 2

    assert send_due(DeliveryOutbox()) == 2

    expected = (
        "critical: Vibration too high on Press 3 (Workshop A): vibration 31.5 mm_s > 25\n"
        f"http://localhost:8000/api/v1/events/{event_id}/"
    )
    (_, to, email) = smtp_server.inbox[0]
    assert to == ["ops@plant.example"]
    assert email.get_content().replace("\r\n", "\n").strip() == expected
    (webhook,) = webhook_receiver.received
    assert webhook.verified
    assert webhook.payload["data"]["event"]["id"] == event_id
    assert webhook.payload["data"]["notification"]["message"] == expected
    assert webhook.payload["data"]["notification"]["recipient_name"] == "Plant chat"

    entry = Event.objects.get(id=event_id).execution_results[0]
    assert entry["type"] == "notification" and entry["template_id"] == template.id
    assert (entry["status"], entry["sent_count"], entry["failed_count"]) == ("completed", 2, 0)
    assert entry["completed_at"].endswith("Z")

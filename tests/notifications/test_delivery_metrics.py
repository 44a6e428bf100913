"""What a delivery tells /metrics and the log: its attempt counted by channel and outcome, one log
line per attempt with the delivery's ids, and the queue gauges following the rows."""

import json

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from iothub.monitoring.logformat import HubJsonFormatter
from iothub.notifications.delivery import DeliveryOutbox
from tests.notifications.conftest import deliver_until_settled
from tests.worker.drive import send_due

pytestmark = pytest.mark.django_db(transaction=True)


def samples() -> dict:
    text = Client().get("/metrics").content.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def delivered(before: dict, after: dict, channel: str, outcome: str) -> float:
    key = ("iothub_notification_deliveries_total", (("channel", channel), ("outcome", outcome)))
    return after.get(key, 0) - before.get(key, 0)


def test_a_sent_delivery_is_counted_and_logged_with_its_ids(webhook_receiver, template_factory, event_factory, caplog):
    template = template_factory(recipients=[{"type": "webhook", "url": webhook_receiver.url()}])
    event = event_factory(template)
    before = samples()
    assert before[("iothub_notification_queue_depth", (("channel", "webhook"),))] == 1

    with caplog.at_level("INFO", logger="iothub.notifications.delivery"):
        assert send_due(DeliveryOutbox(), batches=1) == 1

    after = samples()
    assert delivered(before, after, "webhook", "sent") == 1
    assert after[("iothub_notification_queue_depth", (("channel", "webhook"),))] == 0
    (record,) = [r for r in caplog.records if getattr(r, "delivery_id", None)]
    line = json.loads(HubJsonFormatter().format(record))
    assert (line["event_id"], line["channel"], line["attempt"], line["outcome"]) == (event.id, "webhook", 1, "sent")
    assert line["template_id"] == template.id and line["level"] == "INFO"


def test_retries_then_a_final_failure_are_counted_apart(
    webhook_receiver, fast_retries, template_factory, event_factory
):
    webhook_receiver.default = 500
    template = template_factory(
        recipients=[{"type": "webhook", "url": webhook_receiver.url()}], retry_count=1, retry_delay_minutes=1
    )
    event_factory(template)
    before = samples()

    deliver_until_settled()

    after = samples()
    assert delivered(before, after, "webhook", "retry") == 1
    assert delivered(before, after, "webhook", "failed") == 1
    assert delivered(before, after, "webhook", "sent") == 0
    assert after[("iothub_notification_deliveries_failed", (("channel", "webhook"),))] == 1

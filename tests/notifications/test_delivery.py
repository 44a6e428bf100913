"""The delivery loop: retries at the template's spacing, the retry budget, priority order, the
event's execution_results entry, and several senders sharing the queue.

These tests commit (the loop's transactions, and time passing between them, are the point)."""

import itertools
import threading
import time
from datetime import timedelta

import pytest

from iothub.events.models import Event
from iothub.notifications.delivery import DeliveryJob, deliveries_next_due_at, deliveries_send_due
from iothub.notifications.models import NotificationDelivery
from iothub.worker.jobs import worker_jobs
from tests.notifications.conftest import deliver_until_settled

pytestmark = pytest.mark.django_db(transaction=True)


def test_failing_twice_then_succeeding_takes_three_attempts_at_the_configured_spacing(
    webhook_receiver, fast_retries, template_factory, event_factory
):
    webhook_receiver.script.extend([500, 500])
    template = template_factory(
        recipients=[{"type": "webhook", "url": webhook_receiver.url()}], retry_count=3, retry_delay_minutes=1
    )
    event_factory(template)
    attempts_seen = []

    def note_attempt():
        delivery = NotificationDelivery.objects.get()
        if delivery.last_attempt_at and (not attempts_seen or attempts_seen[-1] != delivery.last_attempt_at):
            attempts_seen.append(delivery.last_attempt_at)

    deliver_until_settled(on_pass=note_attempt)

    delivery = NotificationDelivery.objects.get()
    assert (delivery.status, delivery.attempt_count, delivery.error_message) == ("sent", 3, None)
    assert [r.status for r in webhook_receiver.received] == [500, 500, 200]
    assert len({r.headers["webhook-id"] for r in webhook_receiver.received}) == 1
    # One unit (a second here) between attempts, and not much more.
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts_seen)]
    assert len(gaps) == 2
    assert all(timedelta(seconds=1) <= gap < timedelta(seconds=2) for gap in gaps), gaps
    arrivals = [r.at for r in webhook_receiver.received]
    assert all(1.0 <= later - earlier < 2.0 for earlier, later in itertools.pairwise(arrivals))


def test_always_failing_ends_failed_after_retry_count_plus_one_attempts_keeping_the_last_error(
    webhook_receiver, fast_retries, template_factory, event_factory
):
    webhook_receiver.script.extend([500, 502, 503])
    webhook_receiver.default = 504
    template = template_factory(
        recipients=[{"type": "webhook", "url": webhook_receiver.url()}], retry_count=2, retry_delay_minutes=0
    )
    event = event_factory(template)
    deliver_until_settled()

    delivery = NotificationDelivery.objects.get()
    assert (delivery.status, delivery.attempt_count, delivery.sent_at) == ("failed", 3, None)
    assert delivery.error_message == "receiver answered 503: nope"
    assert len(webhook_receiver.received) == 3
    entry = Event.objects.get(id=event.id).execution_results[0]
    assert (entry["status"], entry["sent_count"], entry["failed_count"]) == ("completed", 0, 1)


def test_no_retries_means_one_attempt(webhook_receiver, template_factory, event_factory):
    webhook_receiver.default = 500
    template = template_factory(recipients=[{"type": "webhook", "url": webhook_receiver.url()}], retry_count=0)
    event_factory(template)
    deliveries_send_due(concurrency=1)
    delivery = NotificationDelivery.objects.get()
    assert (delivery.status, delivery.attempt_count) == ("failed", 1)


def test_a_failed_attempt_is_not_due_again_before_the_delay(
    webhook_receiver, fast_retries, template_factory, event_factory
):
    webhook_receiver.default = 500
    template = template_factory(
        recipients=[{"type": "webhook", "url": webhook_receiver.url()}], retry_count=3, retry_delay_minutes=30
    )
    event_factory(template)
    assert deliveries_send_due(concurrency=1) == 1
    assert deliveries_send_due(concurrency=1) == 0
    delivery = NotificationDelivery.objects.get()
    assert deliveries_next_due_at() == delivery.last_attempt_at + timedelta(seconds=30)
    assert len(webhook_receiver.received) == 1


def test_next_due_is_none_when_nothing_is_pending(db):
    assert deliveries_next_due_at() is None


def test_lower_priority_numbers_go_first_then_the_oldest(webhook_receiver, template_factory, event_factory):
    low = template_factory(priority=5, recipients=[{"type": "webhook", "url": webhook_receiver.url("/p5-old")}])
    high = template_factory(priority=0, recipients=[{"type": "webhook", "url": webhook_receiver.url("/p0")}])
    normal = template_factory(priority=1, recipients=[{"type": "webhook", "url": webhook_receiver.url("/p1")}])
    low_again = template_factory(priority=5, recipients=[{"type": "webhook", "url": webhook_receiver.url("/p5-new")}])
    for template in (low, high, normal, low_again):
        event_factory(template)  # each in its own transaction, so created_at orders them
    deliveries_send_due(concurrency=1)
    assert [r.path for r in webhook_receiver.received] == ["/p0", "/p1", "/p5-old", "/p5-new"]


def test_execution_results_entry_completes_when_every_delivery_is_final(
    webhook_receiver, template_factory, event_factory
):
    template = template_factory(
        retry_count=0,
        recipients=[
            {"type": "webhook", "url": webhook_receiver.url("/ok")},
            {"type": "webhook", "url": webhook_receiver.url("/broken")},
        ],
    )
    event = event_factory(template)
    webhook_receiver.script.append(200)
    webhook_receiver.default = 500

    deliveries_send_due(concurrency=1, limit=1)
    assert Event.objects.get(id=event.id).execution_results[0]["status"] == "pending"

    deliveries_send_due(concurrency=1)
    entry = Event.objects.get(id=event.id).execution_results[0]
    assert entry["type"] == "notification" and entry["template_id"] == template.id
    assert (entry["status"], entry["sent_count"], entry["failed_count"]) == ("completed", 1, 1)
    assert entry["completed_at"]


def test_concurrent_senders_send_every_delivery_once_and_complete_every_event(
    webhook_receiver, template_factory, event_factory
):
    webhook_template = template_factory(
        recipients=[{"type": "webhook", "url": webhook_receiver.url(f"/r{n}")} for n in range(50)]
    )
    events = [event_factory(webhook_template) for _ in range(4)]

    assert deliveries_send_due(concurrency=4) == 200

    ids = [r.headers["webhook-id"] for r in webhook_receiver.received]
    assert len(ids) == 200 and len(set(ids)) == 200
    assert NotificationDelivery.objects.filter(status="sent", attempt_count=1).count() == 200
    for event in events:
        entry = Event.objects.get(id=event.id).execution_results[0]
        assert (entry["status"], entry["sent_count"], entry["failed_count"]) == ("completed", 50, 0)


def test_stop_request_lets_in_flight_sends_finish_and_claims_no_more(webhook_receiver, template_factory, event_factory):
    webhook_receiver.delay = 0.5
    recipients = [{"type": "webhook", "url": webhook_receiver.url(f"/{n}")} for n in range(6)]
    template = template_factory(recipients=recipients)
    event_factory(template)
    stop = threading.Event()
    result = []
    sender = threading.Thread(target=lambda: result.append(deliveries_send_due(concurrency=2, should_stop=stop.is_set)))
    sender.start()
    time.sleep(0.2)  # both threads are now inside a send
    stop.set()
    sender.join(timeout=5)

    assert result == [2]
    assert len(webhook_receiver.received) == 2
    assert NotificationDelivery.objects.filter(status="sent").count() == 2
    assert NotificationDelivery.objects.filter(status="pending", attempt_count=0).count() == 4


def test_the_worker_job_keeps_its_concurrency_in_flight_and_reports_what_it_sent(
    webhook_receiver, template_factory, event_factory
):
    webhook_receiver.delay = 0.2
    template = template_factory(
        recipients=[{"type": "webhook", "url": webhook_receiver.url(f"/{n}")} for n in range(9)]
    )
    event_factory(template)
    job = DeliveryJob(concurrency=3)
    assert job.channel == "iothub_notification_deliveries"
    handled, deadline = 0, time.monotonic() + 10
    try:
        while handled < 9 and time.monotonic() < deadline:
            handled += job.run_once()
        assert job.run_once() == 0
        assert job.next_due() is None
    finally:
        job.close()
    assert handled == 9
    assert webhook_receiver.most_in_flight == 3
    assert NotificationDelivery.objects.filter(status="sent").count() == 9


def test_the_worker_runs_the_delivery_job():
    jobs = {job.name: job for job in worker_jobs()}
    assert isinstance(jobs["notification_deliveries"], DeliveryJob)
    assert jobs["notification_deliveries"].channel == "iothub_notification_deliveries"

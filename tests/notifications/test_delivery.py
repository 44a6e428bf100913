"""Deliveries on the worker's engine: retries at the template's spacing, the retry budget,
priority order, the event's execution_results entry, batches sent concurrently, and stopping.

These tests commit (the engine's transactions, and time passing between them, are the point)."""

import itertools
import time
from datetime import timedelta

import pytest

from iothub.events.models import Event
from iothub.notifications.delivery import DeliveryOutbox
from iothub.notifications.models import NotificationDelivery
from iothub.notifications.services import notification_template_update
from iothub.worker.jobs import worker_outboxes
from tests.notifications.conftest import deliver_until_settled
from tests.worker.drive import next_due, running_worker, send_due, wait_until

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
    send_due(DeliveryOutbox())
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
    assert send_due(DeliveryOutbox()) == 1
    assert send_due(DeliveryOutbox()) == 0
    delivery = NotificationDelivery.objects.get()
    assert delivery.next_attempt_at == delivery.last_attempt_at + timedelta(seconds=30)
    assert next_due(DeliveryOutbox()) == delivery.next_attempt_at
    assert len(webhook_receiver.received) == 1


def test_a_template_s_new_retry_delay_reschedules_its_pending_retries(
    webhook_receiver, fast_retries, template_factory, event_factory
):
    webhook_receiver.default = 500
    template = template_factory(
        recipients=[{"type": "webhook", "url": webhook_receiver.url()}], retry_count=3, retry_delay_minutes=30
    )
    event_factory(template)
    send_due(DeliveryOutbox())

    notification_template_update(template=template, changes={"retry_delay_minutes": 2})

    delivery = NotificationDelivery.objects.get()
    assert delivery.next_attempt_at == delivery.last_attempt_at + timedelta(seconds=2)


def test_next_due_is_none_when_nothing_is_pending(transactional_db):
    assert next_due(DeliveryOutbox()) is None


def test_lower_priority_numbers_go_first_then_the_oldest(webhook_receiver, template_factory, event_factory):
    low = template_factory(priority=5, recipients=[{"type": "webhook", "url": webhook_receiver.url("/p5-old")}])
    high = template_factory(priority=0, recipients=[{"type": "webhook", "url": webhook_receiver.url("/p0")}])
    normal = template_factory(priority=1, recipients=[{"type": "webhook", "url": webhook_receiver.url("/p1")}])
    low_again = template_factory(priority=5, recipients=[{"type": "webhook", "url": webhook_receiver.url("/p5-new")}])
    for template in (low, high, normal, low_again):
        event_factory(template)  # each in its own transaction, so created_at orders them
    # Batches of one, so that the order of claims is the order of arrivals.
    send_due(DeliveryOutbox(), size=1)
    assert [r.path for r in webhook_receiver.received] == ["/p0", "/p1", "/p5-old", "/p5-new"]


def test_a_batch_claims_the_most_urgent_due_deliveries(webhook_receiver, template_factory, event_factory):
    low = template_factory(priority=5, recipients=[{"type": "webhook", "url": webhook_receiver.url("/p5")}])
    high = template_factory(priority=0, recipients=[{"type": "webhook", "url": webhook_receiver.url("/p0")}])
    normal = template_factory(priority=1, recipients=[{"type": "webhook", "url": webhook_receiver.url("/p1")}])
    for template in (low, high, normal):
        event_factory(template)

    assert send_due(DeliveryOutbox(), size=2, batches=1) == 2

    assert sorted(r.path for r in webhook_receiver.received) == ["/p0", "/p1"]


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

    send_due(DeliveryOutbox(), size=1, batches=1)
    assert Event.objects.get(id=event.id).execution_results[0]["status"] == "pending"

    send_due(DeliveryOutbox(), size=1)
    entry = Event.objects.get(id=event.id).execution_results[0]
    assert entry["type"] == "notification" and entry["template_id"] == template.id
    assert (entry["status"], entry["sent_count"], entry["failed_count"]) == ("completed", 1, 1)
    assert entry["completed_at"]


def test_the_worker_sends_every_delivery_once_in_concurrent_batches_and_completes_every_event(
    settings, webhook_receiver, template_factory, event_factory
):
    settings.IOTHUB_NOTIFICATION_CONCURRENCY = 8  # 8 slots, batches of 4: two lanes fill them, a third waits
    webhook_receiver.delay = 0.05
    webhook_template = template_factory(
        recipients=[{"type": "webhook", "url": webhook_receiver.url(f"/r{n}")} for n in range(50)]
    )
    events = [event_factory(webhook_template) for _ in range(4)]

    with running_worker([DeliveryOutbox()], batch_size=4) as worker:
        (runner,) = worker_runners(worker)
        assert [lane.size for lane in runner.lanes] == [4, 4, 4]
        wait_until(lambda: NotificationDelivery.objects.filter(status="sent").count() == 200, what="200 sent")

    ids = [r.headers["webhook-id"] for r in webhook_receiver.received]
    assert len(ids) == 200 and len(set(ids)) == 200
    assert NotificationDelivery.objects.filter(status="sent", attempt_count=1).count() == 200
    # Batches were in flight together, never more sends than the concurrency.
    assert webhook_receiver.most_in_flight == 8
    for event in events:
        entry = Event.objects.get(id=event.id).execution_results[0]
        assert (entry["status"], entry["sent_count"], entry["failed_count"]) == ("completed", 50, 0)


def worker_runners(worker):
    wait_until(lambda: worker.runners, what="the worker's start")
    return worker.runners


def test_stop_lets_the_batch_in_flight_finish_and_claims_no_more(
    settings, webhook_receiver, template_factory, event_factory
):
    settings.IOTHUB_NOTIFICATION_CONCURRENCY = 2
    webhook_receiver.delay = 0.5
    recipients = [{"type": "webhook", "url": webhook_receiver.url(f"/{n}")} for n in range(6)]
    template = template_factory(recipients=recipients)
    event_factory(template)

    with running_worker([DeliveryOutbox()]):
        wait_until(lambda: webhook_receiver.arrived == 2, what="a batch in flight")
    # The block's end stopped the worker and waited for it.

    assert len(webhook_receiver.received) == 2
    assert NotificationDelivery.objects.filter(status="sent").count() == 2
    assert NotificationDelivery.objects.filter(status="pending", attempt_count=0).count() == 4


def test_the_worker_runs_the_delivery_outbox():
    outboxes = {outbox.queue.table: outbox for outbox in worker_outboxes()}
    assert isinstance(outboxes["notification_deliveries"], DeliveryOutbox)
    assert outboxes["notification_deliveries"].queue.channel == "iothub_notification_deliveries"


def test_two_batches_finishing_an_action_s_last_deliveries_together_complete_its_entry(
    settings, webhook_receiver, template_factory, event_factory
):
    # Two lanes of one, each with one of the action's two deliveries, sent for the same 0.3 s:
    # both record at the same moment, each seeing the other's delivery pending when it counts
    # without the events' lock. Five events, one after the other, so the race is run five times.
    settings.IOTHUB_NOTIFICATION_CONCURRENCY = 2
    webhook_receiver.delay = 0.3
    template = template_factory(recipients=[{"type": "webhook", "url": webhook_receiver.url(f"/{n}")} for n in (1, 2)])

    with running_worker([DeliveryOutbox()], batch_size=1):
        for round_ in range(5):
            event = event_factory(template)
            wait_until(
                lambda event=event: NotificationDelivery.objects.filter(event=event, status="sent").count() == 2,
                what=f"round {round_}'s deliveries",
            )
            time.sleep(0.2)  # both batches committed
            entry = Event.objects.get(id=event.id).execution_results[0]
            assert (entry["status"], entry["sent_count"]) == ("completed", 2), (round_, entry)

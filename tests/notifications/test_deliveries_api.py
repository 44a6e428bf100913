"""The deliveries API: list with filters, detail, and the operator's retry of a failed delivery."""

from django.utils import timezone

from iothub.events.models import Event
from iothub.notifications.models import NotificationDelivery
from iothub.notifications.services import notification_action_record

URL = "/api/v1/notification-deliveries/"


def _deliveries(template_factory, event_factory):
    template = template_factory(
        recipients=[
            {"type": "email", "address": "ops@plant.example"},
            {"type": "sms", "phone": "+380501234567"},
            {"type": "webhook", "url": "https://hooks.example.com/x"},
        ]
    )
    first, second = event_factory(template), event_factory(template)
    return template, first, second


def _fail(delivery: NotificationDelivery, error: str = "receiver answered 500") -> None:
    NotificationDelivery.objects.filter(id=delivery.id).update(
        status="failed", attempt_count=4, last_attempt_at=timezone.now(), error_message=error
    )


def test_list_and_filters(viewer_client, template_factory, event_factory):
    _, first, second = _deliveries(template_factory, event_factory)
    _fail(NotificationDelivery.objects.get(event=second, recipient_type="sms"))

    assert viewer_client.get(URL).json()["count"] == 6
    by_event = viewer_client.get(URL, {"event": first.id}).json()
    assert {row["event"] for row in by_event["results"]} == {first.id}
    assert by_event["count"] == 3
    failed = viewer_client.get(URL, {"status": "failed"}).json()["results"]
    assert [(row["event"], row["recipient_type"]) for row in failed] == [(second.id, "sms")]
    webhooks = viewer_client.get(URL, {"recipient_type": "webhook"}).json()["results"]
    assert {row["recipient_address"] for row in webhooks} == {"https://hooks.example.com/x"}
    assert viewer_client.get(URL, {"status": "lost"}).status_code == 400


def test_detail(viewer_client, template_factory, event_factory):
    template, first, _ = _deliveries(template_factory, event_factory)
    delivery = NotificationDelivery.objects.filter(event=first).first()
    body = viewer_client.get(f"{URL}{delivery.id}/").json()
    assert body["template"] == template.id and body["template_name"] == template.name
    assert body["rendered_message"] == delivery.rendered_message
    assert (body["status"], body["attempt_count"], body["priority"]) == ("pending", 0, 1)


def test_operator_retries_a_failed_delivery_with_a_fresh_budget(operator_client, template_factory, event_factory):
    _, first, _ = _deliveries(template_factory, event_factory)
    for delivery in NotificationDelivery.objects.filter(event=first):
        NotificationDelivery.objects.filter(id=delivery.id).update(status="sent", attempt_count=1)
    failed = NotificationDelivery.objects.filter(event=first).first()
    _fail(failed, "receiver answered 502")
    notification_action_record(event_id=first.id, template_id=failed.template_id)
    assert Event.objects.get(id=first.id).execution_results[0]["status"] == "completed"

    response = operator_client.post(f"{URL}{failed.id}/retry/")
    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["attempt_count"]) == ("pending", 0)
    failed.refresh_from_db()
    assert (failed.status, failed.attempt_count, failed.error_message) == ("pending", 0, "receiver answered 502")
    entry = Event.objects.get(id=first.id).execution_results[0]
    assert (entry["status"], entry["sent_count"], entry["failed_count"]) == ("pending", 2, 0)


def test_retry_of_a_pending_delivery_is_refused_saying_why(operator_client, template_factory, event_factory):
    _, first, _ = _deliveries(template_factory, event_factory)
    delivery = NotificationDelivery.objects.filter(event=first).first()
    response = operator_client.post(f"{URL}{delivery.id}/retry/")
    assert response.status_code == 409
    assert "pending" in response.json()["detail"] and "only a failed delivery" in response.json()["detail"]


def test_retry_of_a_sent_delivery_is_refused_saying_why(operator_client, template_factory, event_factory):
    _, first, _ = _deliveries(template_factory, event_factory)
    delivery = NotificationDelivery.objects.filter(event=first).first()
    NotificationDelivery.objects.filter(id=delivery.id).update(status="sent", sent_at=timezone.now())
    response = operator_client.post(f"{URL}{delivery.id}/retry/")
    assert response.status_code == 409
    assert "was sent" in response.json()["detail"] and "twice" in response.json()["detail"]
    delivery.refresh_from_db()
    assert delivery.status == "sent"


def test_viewer_cannot_retry(viewer_client, template_factory, event_factory):
    _, first, _ = _deliveries(template_factory, event_factory)
    delivery = NotificationDelivery.objects.filter(event=first).first()
    _fail(delivery)
    assert viewer_client.post(f"{URL}{delivery.id}/retry/").status_code == 403
    delivery.refresh_from_db()
    assert delivery.status == "failed"


def test_retry_of_an_unknown_delivery_is_404(operator_client, db):
    assert operator_client.post(f"{URL}999999/retry/").status_code == 404


def test_deliveries_are_read_only(operator_client, template_factory, event_factory):
    _, first, _ = _deliveries(template_factory, event_factory)
    delivery = NotificationDelivery.objects.filter(event=first).first()
    assert operator_client.patch(f"{URL}{delivery.id}/", {"status": "sent"}, format="json").status_code == 405
    assert operator_client.delete(f"{URL}{delivery.id}/").status_code == 405

"""`/metrics`: it parses as Prometheus text, its counters move with readings posted over HTTP, its
database gauges follow the rows, and only allowed scrapers get it."""

import json
from datetime import timedelta

import httpx
import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from iothub.events.models import Event
from iothub.ingest.services import telemetry_ingest
from iothub.monitoring.logformat import HubJsonFormatter
from iothub.notifications.models import NotificationDelivery, NotificationTemplate
from iothub.rules.models import Rule
from iothub.telemetry.services import NewReading, telemetry_rollups_process


def scrape(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape: (sample name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def message(serial: str, **metrics) -> dict:
    return {"version": "0.0.1", "serial_number": serial, "metrics": metrics or {"vibration": 5.2}}


# Committed for real, so that the live server's threads see the rows.
@pytest.mark.django_db(transaction=True)
def test_counters_move_when_readings_are_posted_over_http(live_server, device_with_token):
    serial, token = device_with_token.device.serial_number, device_with_token.token
    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {token}"}) as client:
        before = scrape(client.get("/metrics").text)

        assert client.post("/api/v1/telemetry/", json=message(serial)).status_code == 201
        assert client.post("/api/v1/telemetry/", json=[message(serial), message(serial)]).status_code == 201
        assert (
            client.post("/api/v1/telemetry/", json=[message(serial), message(serial, vibration="x")]).status_code == 400
        )
        assert (
            client.post(
                "/api/v1/telemetry/", json=message(serial), headers={"Authorization": "Bearer nope"}
            ).status_code
            == 401
        )

        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = scrape(response.text)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("iothub_readings_accepted_total") == 3
    assert moved("iothub_readings_rejected_total", status="400") == 2  # the whole batch is refused
    assert moved("iothub_readings_rejected_total", status="401") == 1
    assert moved("iothub_ingest_duration_seconds_count") == 4
    assert moved("iothub_http_requests_total", view="telemetry-ingest", method="POST", status="201") == 2
    assert value(after, "iothub_database_up") == 1
    assert value(after, "iothub_devices", status="active") == 1


@pytest.mark.django_db
def test_database_gauges_follow_events_and_the_delivery_queue(device):
    rule = Rule.objects.create(device=device, name="r", operator="gt", threshold=1, action_config=[], severity="info")
    open_event = Event.objects.create(rule=rule, severity="warning", message="m", execution_results=[])
    Event.objects.create(rule=rule, severity="warning", message="m", execution_results=[], status="resolved")
    template = NotificationTemplate.objects.create(name="t", message_template="x", recipients=[], retry_delay_minutes=5)
    now = timezone.now()

    def delivery(**fields):
        return NotificationDelivery.objects.create(
            event=open_event, template=template, recipient_address="a@example.com", rendered_message="x", **fields
        )

    delivery(recipient_type="email")  # due now
    # Retries as the worker schedules them: last attempt + the template's 5 minutes.
    delivery(
        recipient_type="email",
        last_attempt_at=now - timedelta(minutes=1),
        attempt_count=1,
        next_attempt_at=now + timedelta(minutes=4),
    )
    delivery(
        recipient_type="webhook",
        last_attempt_at=now - timedelta(minutes=15),
        attempt_count=1,
        next_attempt_at=now - timedelta(minutes=10),
    )
    delivery(recipient_type="sms", status="failed", attempt_count=4)
    delivery(recipient_type="sms", status="sent")

    samples = scrape(Client().get("/metrics").content.decode())

    assert value(samples, "iothub_events_open", severity="warning") == 1
    assert value(samples, "iothub_notification_queue_depth", channel="email") == 2
    assert value(samples, "iothub_notification_queue_depth", channel="webhook") == 1
    assert value(samples, "iothub_notification_queue_depth", channel="sms") == 0
    assert value(samples, "iothub_notification_deliveries_failed", channel="sms") == 1
    # The webhook's retry fell due 10 minutes ago (15 min since its attempt, 5 min delay); the one
    # waiting for its retry is not due and does not count.
    age = value(samples, "iothub_notification_queue_oldest_due_age_seconds")
    assert 595 <= age <= 660, age


@pytest.mark.django_db
def test_the_rollup_queue_gauges_follow_the_queue(device):
    stamp = timezone.now()
    readings = [
        NewReading(stamp - timedelta(seconds=s), {"version": "0.0.1", "metrics": {"vibration": 1}}) for s in (1, 2)
    ]
    telemetry_ingest(device=device, readings=readings)
    telemetry_ingest(device=device, readings=readings[:1])

    samples = scrape(Client().get("/metrics").content.decode())
    assert value(samples, "iothub_telemetry_rollup_queue_batches") == 2
    assert value(samples, "iothub_telemetry_rollup_queue_readings") == 3
    # In the test's one transaction now() is its start, as the batches' queued_at.
    assert 0 <= value(samples, "iothub_telemetry_rollup_queue_oldest_age_seconds") < 60

    telemetry_rollups_process()

    samples = scrape(Client().get("/metrics").content.decode())
    assert value(samples, "iothub_telemetry_rollup_queue_batches") == 0
    assert value(samples, "iothub_telemetry_rollup_queue_readings") == 0
    assert value(samples, "iothub_telemetry_rollup_queue_oldest_age_seconds") == 0


@pytest.mark.django_db
def test_a_scraper_outside_the_allowed_networks_is_refused():
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 403
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200


@pytest.mark.django_db
def test_the_metrics_token_lets_a_remote_scraper_in(settings):
    settings.IOTHUB_METRICS_TOKEN = "s3cret-scrape-token"
    remote = Client(REMOTE_ADDR="10.1.2.3")

    assert remote.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token").status_code == 200
    assert remote.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert remote.get("/metrics").status_code == 403


@pytest.mark.django_db
def test_metrics_answer_without_the_database_and_say_so(monkeypatch):
    from django.db import DatabaseError

    from iothub.monitoring import collectors

    def broken(self):
        raise DatabaseError("the database went away")

    monkeypatch.setattr(collectors.HubStateCollector, "_families", broken)
    response = Client().get("/metrics")

    assert response.status_code == 200
    samples = scrape(response.content.decode())
    assert value(samples, "iothub_database_up") == 0
    assert ("iothub_readings_accepted_total", ()) in samples


@pytest.mark.django_db
def test_every_request_gets_one_json_log_line_with_its_ids(device_with_token, caplog, settings):
    client = Client()
    with caplog.at_level("DEBUG", logger="iothub.request"):
        response = client.post(
            "/api/v1/telemetry/",
            data=json.dumps(message(device_with_token.device.serial_number)),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {device_with_token.token}",
            HTTP_X_REQUEST_ID="req-42",
        )

    assert response.status_code == 201 and response["X-Request-ID"] == "req-42"
    (record,) = [r for r in caplog.records if r.name == "iothub.request"]
    assert (record.request_id, record.status, record.view) == ("req-42", 201, "telemetry-ingest")
    assert record.device_id == str(device_with_token.device.id)
    line = json.loads(HubJsonFormatter().format(record))
    assert line["request_id"] == "req-42" and line["device_id"] == str(device_with_token.device.id)
    # A stored reading is logged at DEBUG: at thousands a second its line would be a flood.
    assert line["logger"] == "iothub.request" and line["level"] == "DEBUG"


@pytest.mark.django_db
def test_a_refused_ingest_request_is_logged_at_info_with_its_device(device_with_token, caplog):
    body = {"version": "0.0.1", "serial_number": device_with_token.device.serial_number, "metrics": {"x": "high"}}
    with caplog.at_level("INFO", logger="iothub.request"):
        response = Client().post(
            "/api/v1/telemetry/",
            data=json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {device_with_token.token}",
        )

    assert response.status_code == 400
    (record,) = [r for r in caplog.records if r.name == "iothub.request"]
    assert (record.levelname, record.status, record.device_id) == ("INFO", 400, str(device_with_token.device.id))


@pytest.mark.django_db
def test_an_unusable_request_id_is_replaced(caplog):
    with caplog.at_level("INFO", logger="iothub.request"):
        response = Client().get("/api/v1/health/", HTTP_X_REQUEST_ID="bad id with spaces\n")

    assert response["X-Request-ID"] != "bad id with spaces\n"
    assert len(response["X-Request-ID"]) == 32


@pytest.mark.django_db
def test_requests_are_counted_by_route_static_files_and_unknown_paths_apart():
    before = scrape(Client().get("/metrics").content.decode())
    client = Client()
    client.get("/static/dashboard/dashboard.css")
    client.get("/no/such/page/")
    client.get("/api/v1/health/")

    after = scrape(Client().get("/metrics").content.decode())

    def moved(**labels):
        name = "iothub_http_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(view="static", method="GET", status="200") == 1
    assert moved(view="unmatched", method="GET", status="404") == 1
    assert moved(view="health", method="GET", status="200") == 1

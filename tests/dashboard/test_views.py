"""The dashboard's pages: who may see them, and that they show the hub's data."""

import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from iothub.devices.services import device_create
from iothub.ingest.services import telemetry_ingest
from iothub.telemetry.services import NewReading
from tests.dashboard.conftest import store_readings

PAGES = ["/", "/overview/stats/", "/overview/events/", "/devices/", "/events/"]


def chart_config(response) -> dict:
    match = re.search(rb'<script id="chart-config" type="application/json">(.*?)</script>', response.content, re.S)
    assert match, "the device page carries no chart configuration"
    return json.loads(match.group(1))


# --- Who may see ---------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", PAGES)
def test_anonymous_visitor_is_sent_to_the_dashboard_login(path):
    response = Client().get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


@pytest.mark.django_db
def test_device_and_event_pages_need_a_login_too(device, event):
    for path in (f"/devices/{device.id}/", f"/events/{event.id}/"):
        response = Client().get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


@pytest.mark.django_db
def test_a_user_without_a_role_is_refused():
    client = Client()
    client.force_login(User.objects.create_user("nobody", password="pw-nobody"))

    response = client.get("/")

    assert response.status_code == 403
    assert "ask an administrator for viewer or operator" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("path", PAGES)
def test_viewer_sees_every_page(viewer_web, path):
    assert viewer_web.get(path).status_code == 200


@pytest.mark.django_db
def test_login_page_is_the_dashboards_own_and_logs_in(operator_user):
    client = Client()
    page = client.get("/login/")
    assert page.status_code == 200
    assert b"IoT Hub Alpha" in page.content and b"Django administration" not in page.content

    response = client.post("/login/", {"username": "olga", "password": "pw-olga", "next": "/devices/"})

    assert response.status_code == 302 and response["Location"] == "/devices/"
    assert client.get("/devices/").status_code == 200


@pytest.mark.django_db
def test_wrong_password_shows_the_login_again_with_an_error(operator_user):
    response = Client().post("/login/", {"username": "olga", "password": "wrong"})

    assert response.status_code == 200
    assert b"didn&#x27;t match" in response.content or b"didn't match" in response.content


@pytest.mark.django_db
def test_logout_is_a_post_and_ends_the_session(operator_web):
    response = operator_web.post("/logout/")

    assert response.status_code == 302 and response["Location"] == "/login/"
    assert operator_web.get("/").status_code == 302


# --- What they show ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_overview_counts_devices_open_events_and_recent_readings(viewer_web, device, event):
    response = viewer_web.get("/")

    overview = response.context["overview"]
    assert overview.devices_by_status == {"active": 1, "inactive": 0, "error": 0}
    assert overview.open_events_by_severity == {"critical": 1, "warning": 0, "info": 0}
    # The fixture's readings are a minute apart, the last one now: one or two fall in the last 60 s.
    assert 1 <= overview.readings_last_minute <= 2
    assert overview.devices_total == 1 and overview.open_events_total == 1
    assert escape(event.message) in response.content.decode()


@pytest.mark.django_db
def test_device_list_shows_status_last_seen_and_the_latest_primary_value(viewer_web, device, hour_of_readings):
    response = viewer_web.get("/devices/")

    (row,) = response.context["rows"]
    assert row.device == device and row.primary_metric == "vibration"
    assert row.primary_value == hour_of_readings[-1].payload["metrics"]["vibration"]
    assert b"Press 3" in response.content and b"mm_s" in response.content


@pytest.mark.django_db
def test_device_list_search_and_filters(viewer_web, device, vibration_type):
    device_create(device_type=vibration_type, name="Lathe 7", serial_number="VIB-SN-777", location="Workshop B")

    def names(query):
        return [row.device.name for row in viewer_web.get("/devices/" + query).context["rows"]]

    assert names("") == ["Lathe 7", "Press 3"]
    assert names("?q=777") == ["Lathe 7"]
    assert names("?location=Workshop+A") == ["Press 3"]
    assert names("?status=error") == []
    assert names(f"?device_type={vibration_type.id}") == ["Lathe 7", "Press 3"]


@pytest.mark.django_db
def test_a_malformed_filter_id_is_a_bad_request(viewer_web):
    assert viewer_web.get("/devices/?device_type=not-a-uuid").status_code == 400
    assert viewer_web.get("/events/?device=not-a-uuid").status_code == 400


@pytest.mark.django_db
def test_device_page_charts_every_metric_with_the_types_range_and_the_rules_thresholds(
    viewer_web, device, rule, hour_of_readings
):
    response = viewer_web.get(f"/devices/{device.id}/")

    config = chart_config(response)
    assert config["aggregateUrl"] == f"/api/v1/devices/{device.id}/telemetry/aggregate/"
    assert [c["metric"] for c in config["charts"]] == ["vibration", "temperature"]
    vibration = config["charts"][0]
    assert vibration["unit"] == "mm_s"
    assert {(line["kind"], line["value"]) for line in vibration["lines"]} == {
        ("range", 0.0),
        ("range", 25.0),
        ("rule", 15.0),
    }
    assert [line["label"] for line in vibration["lines"]] == [
        "expected min 0",
        "expected max 25",
        "High vibration: > 15",
    ]
    assert config["charts"][1]["lines"] == []
    assert b"High vibration" in response.content
    assert b"vendor/plotly/plotly.min.js" in response.content


@pytest.mark.django_db
def test_a_rule_on_a_secondary_metric_is_drawn_on_that_metrics_chart(viewer_web, device, rule, hour_of_readings):
    rule.metric, rule.threshold = "temperature", 70
    rule.save()

    config = chart_config(viewer_web.get(f"/devices/{device.id}/"))

    assert [line["value"] for line in config["charts"][1]["lines"]] == [70.0]


@pytest.mark.django_db
def test_device_page_of_an_unknown_device_is_404(viewer_web):
    assert viewer_web.get("/devices/00000000-0000-0000-0000-000000000000/").status_code == 404


@pytest.mark.django_db
def test_event_list_filters_by_status_severity_device_and_text(viewer_web, device, event):
    def ids(query):
        return [e.id for e in viewer_web.get("/events/" + query).context["page"].object_list]

    assert ids("") == [event.id]
    assert ids("?status=open") == [event.id]
    assert ids("?status=resolved") == []
    assert ids("?severity=critical") == [event.id]
    assert ids("?severity=info") == []
    assert ids(f"?device={device.id}") == [event.id]
    assert ids("?q=16.2") == [event.id]
    assert ids("?q=pressure") == []


@pytest.mark.django_db
def test_event_page_shows_the_reading_the_actions_and_the_deliveries(viewer_web, event):
    response = viewer_web.get(f"/events/{event.id}/")

    assert response.status_code == 200
    assert response.context["page"].reading.id == event.telemetry_id
    assert response.context["page"].reading.payload["metrics"]["vibration"] == 16.2
    content = response.content.decode()
    assert "stop_machine" in content and "API timeout" in content
    assert "No notification deliveries" in content


@pytest.mark.django_db
def test_readings_per_minute_counts_only_the_last_minute(device):
    from iothub.dashboard.selectors import readings_count_recent

    now = timezone.now()
    store_readings(device, [{"vibration": 1}] * 5, every=timedelta(seconds=10), end=now)  # 40 s span
    store_readings(device, [{"vibration": 1}] * 3, every=timedelta(minutes=5), end=now - timedelta(minutes=2))

    assert readings_count_recent(now=now) == 5
    assert readings_count_recent(now=now + timedelta(minutes=5)) == 0


# --- Acting on events ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_operator_sees_the_buttons_and_acknowledges_then_resolves(operator_web, operator_user, event):
    page = operator_web.get(f"/events/{event.id}/").content.decode()
    assert 'data-action="acknowledge"' in page and 'data-action="resolve"' in page

    response = operator_web.post(f"/events/{event.id}/acknowledge/", {"note": "on my way"}, follow=True)

    event.refresh_from_db()
    assert (event.status, event.acknowledged_by, event.acknowledgement_note) == (
        "acknowledged",
        operator_user,
        "on my way",
    )
    assert f"Event {event.id} acknowledged." in response.content.decode()
    assert 'data-action="acknowledge"' not in response.content.decode()

    operator_web.post(f"/events/{event.id}/resolve/", {"note": "bearing replaced"})

    event.refresh_from_db()
    assert (event.status, event.resolution_note) == ("resolved", "bearing replaced")


@pytest.mark.django_db
def test_a_step_the_lifecycle_refuses_is_reported_not_applied(operator_web, event):
    operator_web.post(f"/events/{event.id}/resolve/")

    response = operator_web.post(f"/events/{event.id}/acknowledge/", follow=True)

    event.refresh_from_db()
    assert event.status == "resolved"
    assert "a resolved event is final" in response.content.decode()


@pytest.mark.django_db
def test_viewer_gets_no_buttons_and_is_refused_by_the_server(viewer_web, event):
    page = viewer_web.get(f"/events/{event.id}/").content.decode()
    assert "data-action=" not in page and "needs the operator role" in page

    for step in ("acknowledge", "resolve"):
        refused = viewer_web.post(f"/events/{event.id}/{step}/")
        assert refused.status_code == 403 and "needs the operator role" in refused.content.decode()

    event.refresh_from_db()
    assert event.status == "new" and event.acknowledged_at is None


@pytest.mark.django_db
def test_acting_needs_a_post(operator_web, event):
    assert operator_web.get(f"/events/{event.id}/acknowledge/").status_code == 405
    event.refresh_from_db()
    assert event.status == "new"


@pytest.mark.django_db
def test_acting_on_an_unknown_event_is_404(operator_web):
    assert operator_web.post("/events/999999/acknowledge/").status_code == 404


@pytest.mark.django_db
def test_event_page_lists_the_notification_deliveries_the_event_enqueued(viewer_web, device):
    from iothub.notifications.services import notification_template_create
    from iothub.rules.services import rule_create

    template = notification_template_create(
        name="Shift lead",
        message_template="{device_name}: {metric} {value}",
        recipients=[{"type": "email", "address": "lead@plant.example"}],
    )
    rule_create(
        device=device,
        name="High vibration",
        operator="gt",
        threshold=15,
        action_config=[
            {
                "type": "notification",
                "template_id": template.id,
                "recipients": [{"type": "sms", "phone": "+15005550006"}],
            }
        ],
    )
    (event,) = telemetry_ingest(
        device=device,
        readings=[
            NewReading(
                timestamp=timezone.now(),
                payload={"version": "0.0.1", "serial_number": device.serial_number, "metrics": {"vibration": 18}},
            )
        ],
    ).events

    response = viewer_web.get(f"/events/{event.id}/")

    deliveries = response.context["page"].deliveries
    assert sorted(d.recipient_address for d in deliveries) == ["+15005550006", "lead@plant.example"]
    content = response.content.decode()
    assert "lead@plant.example" in content and "Shift lead" in content and "pending" in content
    assert viewer_web.get("/").context["overview"].deliveries_pending == 2

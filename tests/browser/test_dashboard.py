"""The dashboard in a real browser: log in, a device's chart drawn from its readings, an event
acknowledged, a viewer refused, a page that refreshes by itself, and a phone-sized screen."""

from datetime import timedelta

import pytest
from django.utils import timezone

from iothub.ingest.services import telemetry_ingest
from iothub.telemetry.services import NewReading
from tests.browser.conftest import PHONE, log_in

# Committed for real, so that the live server's threads see the rows.
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Plotly draws each marker of a scatter trace as a <path class="point">; the average is the last
# trace of a chart (after the min and max that draw the band).
RENDERED_POINTS = """(metric) => {
    const chart = document.querySelector(`.chart[data-metric="${metric}"]`);
    const traces = chart.querySelectorAll('.scatterlayer .trace');
    return traces[traces.length - 1].querySelectorAll('.points path.point').length;
}"""
CHART_DATA = """(metric) => {
    const chart = document.querySelector(`.chart[data-metric="${metric}"]`);
    const average = chart.data[chart.data.length - 1];
    return {x: average.x.length, y: average.y.filter((v) => v !== null).length, max: Math.max(...average.y),
            shapes: chart.layout.shapes.map((s) => s.y0).sort((a, b) => a - b)};
}"""


def test_operator_logs_in_and_sees_the_devices_chart_drawn_with_its_points(
    page, live_server, operator_user, device, rule, event
):
    log_in(page, live_server, "olga", "pw-olga")
    page.click("nav >> text=Devices")
    page.click("table >> text=Press 3")
    page.wait_for_function("document.body.dataset.chartsLoadedAt")

    data = page.evaluate(CHART_DATA, "vibration")
    # An hour of readings one minute apart, in the 1 h view's one-minute buckets.
    assert data["y"] >= 55, data
    assert data["max"] == pytest.approx(16.2)
    # The type's range (0 and 25) and the rule's threshold (15) are drawn as lines.
    assert data["shapes"] == [0, 15, 25]
    assert page.evaluate(RENDERED_POINTS, "vibration") == data["y"]
    assert page.evaluate("window.iothubCharts.vibration.bucketSeconds") == 60
    assert page.locator(".chart-status").inner_text().startswith("Buckets of 1 min")


def test_switching_to_24_hours_asks_for_coarser_buckets(page, live_server, operator_user, device, event):
    log_in(page, live_server, "olga", "pw-olga", then=f"/devices/{device.id}/")
    page.wait_for_function("document.body.dataset.chartsLoadedAt")
    first = page.evaluate("document.body.dataset.chartsLoadedAt")

    page.click("button[data-range='24h']")
    page.wait_for_function(f"document.body.dataset.chartsLoadedAt !== '{first}'")

    assert page.evaluate("window.iothubCharts.vibration.bucketSeconds") == 300
    assert "range=24h" in page.url
    assert 12 <= page.evaluate(CHART_DATA, "vibration")["y"] <= 13


def test_operator_acknowledges_an_event_and_sees_its_status_change(page, live_server, operator_user, event):
    log_in(page, live_server, "olga", "pw-olga", then="/events/")
    page.click(f"tr[data-event-id='{event.id}'] a >> nth=0")
    status = page.locator("[data-testid=event-status]")
    assert status.inner_text() == "new"

    page.fill("input[aria-label='Acknowledgement note']", "checking the bearing")
    page.click("button[data-action=acknowledge]")

    page.wait_for_selector("text=acknowledged.")
    assert status.inner_text() == "acknowledged"
    assert "olga" in page.locator("[data-testid=acknowledged]").inner_text()
    event.refresh_from_db()
    assert (event.status, event.acknowledgement_note) == ("acknowledged", "checking the bearing")


def test_viewer_is_not_offered_the_buttons_and_the_server_refuses_a_forged_post(page, live_server, viewer_user, event):
    log_in(page, live_server, "victor", "pw-victor", then=f"/events/{event.id}/")

    assert page.locator("button[data-action]").count() == 0
    assert "needs the operator role" in page.locator("[data-testid=viewer-note]").inner_text()
    status = page.evaluate(
        """async (url) => {
            const token = document.cookie.split('; ').find((c) => c.startsWith('csrftoken=')).split('=')[1];
            const response = await fetch(url, {method: 'POST', headers: {'X-CSRFToken': token}});
            return response.status;
        }""",
        f"/events/{event.id}/acknowledge/",
    )

    assert status == 403
    event.refresh_from_db()
    assert event.status == "new"


def test_overview_shows_a_new_event_without_a_reload(page, live_server, operator_user, device, rule):
    log_in(page, live_server, "olga", "pw-olga")
    assert page.locator("#event-feed").inner_text().strip() == "No events yet."
    assert page.locator("[data-testid=open-events-critical]").inner_text() == "0"

    reading = NewReading(
        timestamp=timezone.now(),
        payload={"version": "0.0.1", "serial_number": device.serial_number, "metrics": {"vibration": 30.5}},
    )
    (event,) = telemetry_ingest(device=device, readings=[reading]).events

    page.wait_for_selector(f"#event-feed [data-event-id='{event.id}']", timeout=10_000)
    page.wait_for_function("document.querySelector('[data-testid=open-events-critical]').innerText === '1'")
    assert "30.5" in page.locator("#event-feed").inner_text()


def test_the_device_page_fits_a_phone(page, live_server, operator_user, device, event):
    page.set_viewport_size(PHONE)
    log_in(page, live_server, "olga", "pw-olga", then=f"/devices/{device.id}/")
    page.wait_for_function("document.body.dataset.chartsLoadedAt")

    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    chart_width = page.evaluate("document.querySelector('.chart .main-svg').getBoundingClientRect().width")
    assert 300 <= chart_width <= PHONE["width"]
    assert page.evaluate(RENDERED_POINTS, "vibration") >= 55


def test_a_wrong_password_keeps_the_login_page(page, live_server, operator_user):
    page.goto(f"{live_server.url}/devices/")
    assert "/login/" in page.url

    page.fill("#id_username", "olga")
    page.fill("#id_password", "not-her-password")
    page.click("button[type=submit]")

    assert page.locator("[role=alert]").inner_text().startswith("Your username and password didn't match")
    assert "/login/" in page.url


def test_readings_buffered_a_day_ago_show_in_the_7_day_view(page, live_server, operator_user, device):
    # On the hour: three readings a minute apart fall in one hourly bucket whatever the time of day.
    old = (timezone.now() - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    telemetry_ingest(
        device=device,
        readings=[
            NewReading(
                timestamp=old + timedelta(minutes=n),
                payload={"version": "0.0.1", "serial_number": device.serial_number, "metrics": {"vibration": 7.0}},
            )
            for n in range(3)
        ],
    )
    log_in(page, live_server, "olga", "pw-olga", then=f"/devices/{device.id}/?range=7d")
    page.wait_for_function("document.body.dataset.chartsLoadedAt")

    assert page.evaluate("window.iothubCharts.vibration.bucketSeconds") == 3600
    assert page.evaluate(CHART_DATA, "vibration")["y"] == 1
    assert page.evaluate(RENDERED_POINTS, "vibration") == 1


def test_a_custom_range_is_drawn_and_kept_in_the_address(page, live_server, operator_user, device, event):
    log_in(page, live_server, "olga", "pw-olga", then=f"/devices/{device.id}/")
    page.wait_for_function("document.body.dataset.chartsLoadedAt")
    first = page.evaluate("document.body.dataset.chartsLoadedAt")

    # The last 30 minutes of the fixture's hour, in the browser's local time as the inputs take it.
    page.evaluate(
        """() => {
            const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
            const now = new Date();
            document.querySelector('input[name=from]').value = local(new Date(now.getTime() - 30 * 60e3));
            document.querySelector('input[name=to]').value = local(new Date(now.getTime() + 60e3));
        }"""
    )
    page.click("button[data-range='custom']")
    page.wait_for_function(f"document.body.dataset.chartsLoadedAt !== '{first}'")

    assert "from=" in page.url and "to=" in page.url
    assert page.locator("button[data-range='custom']").get_attribute("aria-pressed") == "true"
    assert 29 <= page.evaluate(CHART_DATA, "vibration")["y"] <= 32
    assert "refreshing" not in page.locator(".chart-status").inner_text()

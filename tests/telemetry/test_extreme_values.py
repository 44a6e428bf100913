"""Extreme numbers: refused at ingest beyond the documented bound, and survived by every query when
they are stored all the same (rows from before the bound, or written in SQL directly).

Aggregates are computed exactly (in `numeric`, which cannot overflow), so that an average of
readings near 1e300 no longer overflows `double precision`; a result beyond what JSON readers take
as a number (±1.8e308) reads null. A stored integer of more digits than Python converts (4,300)
comes back as its decimal text.
"""

import csv
import io
import math
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from iothub.telemetry.models import Telemetry
from iothub.telemetry.services import telemetry_rollups_rebuild

pytestmark = pytest.mark.django_db

HUGE_INTEGER = "9" * 5000


def ingest(client, token, value: str):
    raw = '{"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"vibration": VALUE}}'
    return client.post(
        "/api/v1/telemetry/",
        data=raw.replace("VALUE", value),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def store_in_sql(device, *values: str, at=None) -> None:
    """Rows as a client writing SQL directly (or an older version of the hub) leaves them."""
    at = at or timezone.now() - timedelta(minutes=5)
    with connection.cursor() as cursor:
        for value in values:
            cursor.execute(
                "INSERT INTO telemetry (device_id, timestamp, payload) VALUES (%s, %s, jsonb_build_object("
                "'version', '0.0.1', 'serial_number', 'VIB-SN-001', "
                "'metrics', jsonb_build_object('vibration', %s::numeric)))",
                [device.id, at, value],
            )
    # What docs/telemetry.md asks of whoever writes telemetry in SQL: the roll-ups computed again.
    telemetry_rollups_rebuild(device_id=device.id)


def aggregate(client, device, **params) -> dict:
    response = client.get(f"/api/v1/devices/{device.id}/telemetry/aggregate/", {"bucket": "1h", **params})
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.parametrize("value", ["1e300", "-1e300", "1e19", "9.3e18", "-9.3e18"])
def test_ingest_refuses_a_value_beyond_the_64_bit_range_naming_the_metric(anonymous_client, device_with_token, value):
    response = ingest(anonymous_client, device_with_token.token, value)

    assert response.status_code == 400, response.content
    assert response.json()["errors"][0]["field"] == "metrics.vibration"
    assert "out of range" in response.json()["detail"]
    assert not Telemetry.objects.exists()


@pytest.mark.parametrize("value", ["9.2e18", "-9.2e18", "-9223372036854775808"])
def test_ingest_stores_a_value_at_the_edge_of_the_bound(anonymous_client, device_with_token, value):
    response = ingest(anonymous_client, device_with_token.token, value)

    assert response.status_code == 201, response.content


def test_aggregates_of_readings_that_overflow_double_precision_are_computed_exactly(viewer_client, device):
    # avg(double precision) keeps a running sum of squares: 1e200 and -1e200 overflow it.
    store_in_sql(device, "1e200", "-1e200", "1e300", "1e300")

    (bucket,) = aggregate(viewer_client, device)["buckets"]

    assert bucket["count"] == 4
    assert bucket["min"] == -1e200 and bucket["max"] == 1e300
    assert bucket["sum"] == 2e300
    assert math.isclose(bucket["avg"], 5e299)


def test_aggregates_beyond_the_range_of_a_json_number_read_null(viewer_client, device):
    store_in_sql(device, "1.7e308", "1.7e308", "1e400", f"-{HUGE_INTEGER}")

    (bucket,) = aggregate(viewer_client, device)["buckets"]

    assert bucket["count"] == 4
    assert bucket["min"] is None  # -(10^5000 - 1)
    assert bucket["max"] is None  # 1e400
    assert bucket["sum"] is None and bucket["avg"] is None


def test_raw_readings_and_the_export_return_numbers_beyond_double_range(viewer_client, device):
    # An integer Python will not convert (over 4,300 digits), and a decimal beyond double's range,
    # come back as their text.
    beyond_double = "1" + "0" * 400 + ".5"
    store_in_sql(device, "1e300", "1e400", HUGE_INTEGER, beyond_double)

    response = viewer_client.get(f"/api/v1/devices/{device.id}/telemetry/", {"order": "asc"})
    assert response.status_code == 200, response.content
    values = [row["payload"]["metrics"]["vibration"] for row in response.json()["results"]]
    # PostgreSQL keeps a JSON number as `numeric` and writes it back without an exponent.
    assert values == [10**300, 10**400, HUGE_INTEGER, beyond_double]

    export = viewer_client.get(f"/api/v1/devices/{device.id}/telemetry/export/", {"metric": "vibration"})
    assert export.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert [row[2] for row in rows[1:]] == [str(10**300), str(10**400), HUGE_INTEGER, beyond_double]


def test_the_dashboard_chart_of_a_device_with_extreme_readings_draws(viewer_user, device):
    store_in_sql(device, "1e200", "-1e200", "1e308", "1e308")
    browser = Client()
    browser.force_login(viewer_user)

    assert browser.get(f"/devices/{device.id}/").status_code == 200
    # What the chart script asks for (device-chart.js), with the session's cookie.
    (bucket,) = aggregate(browser, device, agg="avg,min,max,count", bucket="5m")["buckets"]
    assert (bucket["count"], bucket["min"], bucket["max"]) == (4, -1e200, 1e308)
    assert math.isclose(bucket["avg"], 5e307)

"""Telemetry posted through HTTP ingest and read back through every query endpoint, on the
hypertable: raw range (cursor-paginated, filtered), latest values, aggregates, CSV export."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from iothub.telemetry.selectors import telemetry_aggregate
from iothub.telemetry.timescale import timescale_enabled

# On the hour, so that buckets of any size up to an hour start at BASE.
BASE = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


def at(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


# (minutes after BASE, vibration, temperature or None)
READINGS = [
    (0, 4.0, 40.0),
    (0.5, 6.0, None),
    (1, 10.0, 41.0),
    (1.5, 16.5, 42.0),
    (2, 20.0, None),
    (3, 2.0, 43.5),
]


@pytest.fixture
def stored(anonymous_client, device_with_token):
    batch = []
    for minutes, vibration, temperature in READINGS:
        metrics = {"vibration": vibration}
        if temperature is not None:
            metrics["temperature"] = temperature
        batch.append(
            {
                "version": "0.0.1",
                "serial_number": "VIB-SN-001",
                "metrics": metrics,
                "timestamp": at(minutes).isoformat(),
            }
        )
    response = anonymous_client.post(
        "/api/v1/telemetry/",
        data=json.dumps(batch),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {device_with_token.token}",
    )
    assert response.status_code == 201, response.content
    return [r["id"] for r in response.json()["readings"]]


def url(device, suffix=""):
    return f"/api/v1/devices/{device.id}/telemetry/{suffix}"


def iso(value: datetime) -> str:
    return value.isoformat()


@pytest.mark.django_db
def test_the_test_database_stores_telemetry_in_a_hypertable():
    assert timescale_enabled()


@pytest.mark.django_db
def test_raw_readings_come_back_newest_first_with_their_payload(viewer_client, device, stored):
    response = viewer_client.get(url(device), {"from": iso(at(-1)), "to": iso(at(10))})
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["id"] for r in results] == list(reversed(stored))
    assert [r["payload"]["metrics"]["vibration"] for r in results] == [v for _, v, _ in reversed(READINGS)]


@pytest.mark.django_db
def test_raw_readings_can_come_oldest_first_and_within_a_range(viewer_client, device, stored):
    response = viewer_client.get(url(device), {"from": iso(at(1)), "to": iso(at(3)), "order": "asc"})
    assert [r["id"] for r in response.json()["results"]] == stored[2:5]


@pytest.mark.django_db
@pytest.mark.parametrize("params", [{"ordering": "timestamp"}, {"ordering": "-id,x"}, {"search": "x"}])
def test_raw_readings_ignore_the_list_parameters_they_do_not_take(viewer_client, device, stored, params):
    # Ordered by `order` and a cursor only (found by the schemathesis run: `ordering` was a 500).
    response = viewer_client.get(url(device), {"from": iso(at(-1)), "to": iso(at(10)), **params})
    assert response.status_code == 200, response.content
    assert [r["id"] for r in response.json()["results"]] == list(reversed(stored))


@pytest.mark.django_db
def test_raw_readings_page_through_a_cursor_without_gaps_or_repeats(viewer_client, device, stored):
    seen, next_url = [], url(device) + f"?from={BASE - timedelta(minutes=1):%Y-%m-%dT%H:%M:%SZ}&page_size=2"
    pages = 0
    while next_url:
        body = viewer_client.get(next_url).json()
        assert len(body["results"]) <= 2
        seen += [r["id"] for r in body["results"]]
        next_url, pages = body["next"], pages + 1
    assert seen == list(reversed(stored))
    assert pages == 3


@pytest.mark.django_db
def test_raw_readings_filter_on_a_metric_and_its_value(viewer_client, device, stored):
    over = viewer_client.get(url(device), {"from": iso(at(-1)), "metric": "vibration", "gt": "15"}).json()
    assert [r["payload"]["metrics"]["vibration"] for r in over["results"]] == [20.0, 16.5]

    with_temperature = viewer_client.get(url(device), {"from": iso(at(-1)), "metric": "temperature"}).json()
    assert len(with_temperature["results"]) == 4

    between = viewer_client.get(
        url(device), {"from": iso(at(-1)), "metric": "vibration", "gte": "6", "lte": "10"}
    ).json()
    assert sorted(r["payload"]["metrics"]["vibration"] for r in between["results"]) == [6.0, 10.0]


@pytest.mark.django_db
def test_latest_gives_the_last_value_of_every_metric(viewer_client, device, stored):
    body = viewer_client.get(url(device, "latest/")).json()
    assert body["metrics"]["vibration"]["value"] == 2.0
    assert body["metrics"]["vibration"]["telemetry_id"] == stored[5]
    assert body["metrics"]["temperature"]["value"] == 43.5
    assert datetime.fromisoformat(body["metrics"]["temperature"]["timestamp"]) == at(3)
    assert datetime.fromisoformat(body["last_seen"]) == at(3)


@pytest.mark.django_db
def test_aggregates_per_minute_bucket(viewer_client, device, stored):
    response = viewer_client.get(
        url(device, "aggregate/"), {"from": iso(at(0)), "to": iso(at(5)), "bucket": "1m", "agg": "avg,min,max,count"}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["metric"] == "vibration" and body["unit"] == "mm_s" and body["bucket_seconds"] == 60
    buckets = [(datetime.fromisoformat(b["bucket"]), b["avg"], b["min"], b["max"], b["count"]) for b in body["buckets"]]
    assert buckets == [
        (at(0), 5.0, 4.0, 6.0, 2),
        (at(1), 13.25, 10.0, 16.5, 2),
        (at(2), 20.0, 20.0, 20.0, 1),
        (at(3), 2.0, 2.0, 2.0, 1),
    ]


@pytest.mark.django_db
def test_aggregates_of_a_secondary_metric_skip_readings_without_it(viewer_client, device, stored):
    body = viewer_client.get(
        url(device, "aggregate/"),
        {"from": iso(at(0)), "to": iso(at(5)), "bucket": "5m", "metric": "temperature", "agg": "count,sum"},
    ).json()
    assert [(b["count"], b["sum"]) for b in body["buckets"]] == [(4, 166.5)]
    assert body["unit"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "bucket", [timedelta(seconds=30), timedelta(minutes=1), timedelta(minutes=15), timedelta(days=1)]
)
def test_time_bucket_and_date_bin_give_the_same_answers(device, stored, bucket):
    common = {"device_id": device.id, "metric": "vibration", "bucket": bucket, "start": at(-60), "end": at(60)}
    with_timescale = telemetry_aggregate(**common, engine="time_bucket")
    without = telemetry_aggregate(**common, engine="date_bin")
    assert with_timescale == without
    assert sum(b.values["count"] for b in without) == len(READINGS)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"bucket": "5 minutes"}, "bucket"),
        ({"bucket": "0m"}, "bucket"),
        ({"bucket": "1s", "from": "2020-01-01T00:00:00Z", "to": "2021-01-01T00:00:00Z"}, "bucket"),
        ({"agg": "median"}, "agg"),
        ({"metric": "vib ration"}, "metric"),
        ({"from": "2030-01-01T00:00:00Z", "to": "2029-01-01T00:00:00Z"}, "from"),
        ({"to": "tomorrow"}, "to"),
    ],
)
def test_aggregate_query_errors_name_the_parameter(viewer_client, device, params, field):
    response = viewer_client.get(url(device, "aggregate/"), params)
    assert response.status_code == 400
    assert field in response.json()


@pytest.mark.django_db
@pytest.mark.parametrize(("params", "field"), [({"gt": "15"}, "metric"), ({"metric": "x", "gt": "abc"}, "gt")])
def test_raw_query_errors_name_the_parameter(viewer_client, device, params, field):
    response = viewer_client.get(url(device), params)
    assert response.status_code == 400
    assert field in response.json()


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["", "aggregate/", "export/"])
def test_from_and_to_with_an_offset_postgresql_cannot_store_select_the_same_instants(
    viewer_client, device, stored, suffix
):
    # ISO 8601 allows offsets up to ±23:59; PostgreSQL's timestamptz input stops at ±15:59.
    start = at(1).astimezone(timezone.get_fixed_timezone(17 * 60)).isoformat()
    end = at(3).astimezone(timezone.get_fixed_timezone(-17 * 60)).isoformat()
    response = viewer_client.get(url(device, suffix), {"from": start, "to": end, "bucket": "1m", "order": "asc"})
    assert response.status_code == 200, response.content
    if suffix == "":
        assert [r["id"] for r in response.json()["results"]] == stored[2:5]
    elif suffix == "aggregate/":
        assert [b["count"] for b in response.json()["buckets"]] == [2, 1]
    else:
        assert len(list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))) == 1 + 3


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["", "aggregate/", "export/"])
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"to": "0001-01-01T00:00:00Z"}, "to"),  # the default `from`, 24 hours earlier, is before year 1
        ({"from": "0001-01-01T00:00:00+01:00"}, "from"),
        ({"to": "9999-12-31T23:00:00-17:00"}, "to"),
    ],
)
def test_a_range_outside_the_calendar_is_a_400_naming_the_parameter(viewer_client, device, suffix, params, field):
    response = viewer_client.get(url(device, suffix), params)
    assert response.status_code == 400, response.content
    assert field in response.json()


@pytest.mark.django_db
def test_csv_export_streams_every_reading_of_the_range(viewer_client, device, stored):
    response = viewer_client.get(url(device, "export/"), {"from": iso(at(0)), "to": iso(at(5))})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    assert response.streaming
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["timestamp", "telemetry_id", "vibration", "temperature"]
    assert [row[1] for row in rows[1:]] == [str(i) for i in stored]
    assert rows[2][2:] == ["6.0", ""]  # a reading without temperature leaves the cell empty
    assert datetime.fromisoformat(rows[1][0]) == at(0)


@pytest.mark.django_db
def test_csv_export_takes_the_metric_columns_asked_for(viewer_client, device, stored):
    response = viewer_client.get(url(device, "export/"), {"from": iso(at(0)), "metric": "temperature"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["timestamp", "telemetry_id", "temperature"]
    assert [row[2] for row in rows[1:]] == ["40.0", "", "41.0", "42.0", "", "43.5"]


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["", "latest/", "aggregate/", "export/"])
def test_queries_need_a_user(anonymous_client, device, suffix):
    assert anonymous_client.get(url(device, suffix)).status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["", "latest/", "aggregate/", "export/"])
def test_queries_of_an_unknown_device_are_404(viewer_client, suffix):
    assert (
        viewer_client.get(f"/api/v1/devices/{'0' * 8}-0000-4000-8000-{'0' * 12}/telemetry/{suffix}").status_code == 404
    )


def test_bucket_origin_is_a_monday_at_midnight_utc():
    from iothub.telemetry.selectors import BUCKET_ORIGIN

    origin = datetime.fromisoformat(BUCKET_ORIGIN)
    assert origin.weekday() == 0 and origin.utcoffset() == timedelta(0) and origin.tzinfo is not None
    assert origin == datetime(2000, 1, 3, tzinfo=UTC)

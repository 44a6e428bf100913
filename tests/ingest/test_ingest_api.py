"""POST /api/v1/telemetry/: what a device may send, what is stored, and what is refused.

Every refusal is checked for its status, for naming the field (and the message's index in a
batch), and for writing nothing: the telemetry table and the device row stay as they were.
"""

import json
import re
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from iothub.devices.models import Device
from iothub.devices.services import device_create, device_revoke_token, device_rotate_token
from iothub.telemetry.models import Telemetry

URL = "/api/v1/telemetry/"


def message(serial="VIB-SN-001", **metrics):
    return {"version": "0.0.1", "serial_number": serial, "metrics": metrics or {"vibration": 5.2}}


def post(client, token, body, *, content_type="application/json"):
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(URL, data=raw, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {token}")


def device_state(device):
    device.refresh_from_db()
    return (device.status, device.last_seen, device.latest_metrics)


@pytest.fixture
def token(device_with_token):
    return device_with_token.token


@pytest.fixture
def nothing_written(device):
    """Asserts, after the test's request, that no row was stored and the device is unchanged."""
    before = (Telemetry.objects.count(), device_state(device))
    yield
    assert (Telemetry.objects.count(), device_state(device)) == before


# --- Stored ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_one_message_is_stored_and_acknowledged_with_its_id_and_timestamp(anonymous_client, token, device):
    response = post(anonymous_client, token, message(vibration=5.2, temperature=45.3))

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["count"] == 1 and body["events"] == []
    row = Telemetry.objects.get(device=device)
    assert body["readings"] == [{"id": row.id, "timestamp": row.timestamp.isoformat().replace("+00:00", "Z")}]
    assert row.payload == {
        "version": "0.0.1",
        "serial_number": "VIB-SN-001",
        "metrics": {"vibration": 5.2, "temperature": 45.3},
    }
    device.refresh_from_db()
    assert device.last_seen == row.timestamp
    latest = device.latest_metrics["temperature"]
    assert latest == {"value": 45.3, "timestamp": latest["timestamp"], "telemetry_id": row.id}
    assert datetime.fromisoformat(latest["timestamp"]) == row.timestamp
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", latest["timestamp"])


@pytest.mark.django_db
def test_a_batch_is_stored_in_order_with_the_devices_timestamps(anonymous_client, token, device):
    start = timezone.now().replace(microsecond=0) - timedelta(minutes=3)
    batch = [{**message(vibration=float(i)), "timestamp": (start + timedelta(minutes=i)).isoformat()} for i in range(3)]

    response = post(anonymous_client, token, batch)

    assert response.status_code == 201, response.content
    ids = [r["id"] for r in response.json()["readings"]]
    rows = {r.id: r for r in Telemetry.objects.filter(device=device)}
    assert sorted(rows) == sorted(ids) and len(ids) == 3
    assert [rows[i].payload["metrics"]["vibration"] for i in ids] == [0.0, 1.0, 2.0]
    assert [rows[i].timestamp for i in ids] == [start + timedelta(minutes=i) for i in range(3)]
    device.refresh_from_db()
    assert device.last_seen == start + timedelta(minutes=2)
    assert device.latest_metrics["vibration"]["value"] == 2.0


@pytest.mark.django_db
def test_last_seen_only_moves_forward(anonymous_client, token, device):
    now = timezone.now().replace(microsecond=0)
    assert post(anonymous_client, token, {**message(), "timestamp": now.isoformat()}).status_code == 201
    older = {**message(vibration=1.0), "timestamp": (now - timedelta(hours=1)).isoformat()}
    assert post(anonymous_client, token, older).status_code == 201

    device.refresh_from_db()
    assert device.last_seen == now
    assert device.latest_metrics["vibration"]["value"] == 5.2  # the older reading is not "latest"
    assert Telemetry.objects.filter(device=device).count() == 2  # but it is stored


@pytest.mark.django_db
def test_status_is_error_while_the_primary_metric_is_out_of_range_and_active_after_a_good_reading(
    anonymous_client, token, device
):
    assert post(anonymous_client, token, message(vibration=31.0)).status_code == 201
    device.refresh_from_db()
    assert device.status == "error"
    assert Telemetry.objects.filter(device=device).count() == 1  # the reading is still stored

    assert post(anonymous_client, token, message(temperature=40.0)).status_code == 201
    device.refresh_from_db()
    assert device.status == "error"  # no primary reading: nothing says it recovered

    assert post(anonymous_client, token, message(vibration=3.0)).status_code == 201
    device.refresh_from_db()
    assert device.status == "active"


@pytest.mark.django_db
def test_an_old_buffered_reading_does_not_change_the_status(anonymous_client, token, device):
    now = timezone.now()
    assert post(anonymous_client, token, {**message(vibration=3.0), "timestamp": now.isoformat()}).status_code == 201
    late = {**message(vibration=99.0), "timestamp": (now - timedelta(minutes=5)).isoformat()}
    assert post(anonymous_client, token, late).status_code == 201
    device.refresh_from_db()
    assert device.status == "active"


@pytest.mark.django_db
def test_an_inactive_device_that_reports_becomes_active(anonymous_client, token, device):
    Device.objects.filter(pk=device.pk).update(status="inactive")
    assert post(anonymous_client, token, message(temperature=40.0)).status_code == 201
    device.refresh_from_db()
    assert device.status == "active"


@pytest.mark.django_db
def test_integers_and_negative_numbers_are_accepted(anonymous_client, token, device):
    response = post(anonymous_client, token, message(vibration=0, temperature=-12.5, operating_hours=1250))
    assert response.status_code == 201, response.content
    assert Telemetry.objects.get(device=device).payload["metrics"] == {
        "vibration": 0,
        "temperature": -12.5,
        "operating_hours": 1250,
    }


# --- Refused: the message ----------------------------------------------------------------------


def assert_refused(response, status, field, *, index=None, contains=None):
    assert response.status_code == status, response.content
    body = response.json()
    first = body["errors"][0]
    assert first["field"] == field
    assert field in body["detail"]
    if index is not None:
        assert first["index"] == index
        assert f"message {index}" in body["detail"]
    if contains is not None:
        assert contains in body["detail"]


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
@pytest.mark.parametrize(
    ("body", "field", "contains"),
    [
        ({"serial_number": "VIB-SN-001", "metrics": {"vibration": 1}}, "version", "required"),
        ({**message(), "version": "9.9.9"}, "version", "supported: 0.0.1"),
        ({"version": "0.0.1", "metrics": {"vibration": 1}}, "serial_number", "required"),
        ({"version": "0.0.1", "serial_number": "VIB-SN-001"}, "metrics", "required"),
        ({**message(), "metrics": {}}, "metrics", "at least one"),
        ({**message(), "metrics": [1, 2]}, "metrics", "object"),
        (message(vibration="5.2"), "metrics.vibration", "not a string"),
        (message(vibration=True), "metrics.vibration", "not a boolean"),
        (message(vibration=None), "metrics.vibration", "not null"),
        (message(vibration={"x": 1}), "metrics.vibration", "not an object"),
        ({**message(), "metrics": {"9lives": 1}}, "metrics.9lives", "metric name"),
        ({**message(), "metrics": {"": 1}}, "metrics.", "metric name"),
        ({**message(), "timestamp": "yesterday"}, "timestamp", "ISO 8601"),
        ({**message(), "timestamp": "2025-01-21T10:00:00"}, "timestamp", "offset"),
        ({**message(), "timestamp": 1737453600}, "timestamp", "ISO 8601"),
        ({**message(), "metric": {"vibration": 1}}, "metric", "unknown field"),
    ],
)
def test_an_invalid_message_is_refused_naming_the_field(anonymous_client, token, body, field, contains):
    assert_refused(post(anonymous_client, token, body), 400, field, contains=contains)


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused_naming_the_metric(anonymous_client, token, literal):
    raw = '{"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"vibration": LITERAL}}'
    raw = raw.replace("LITERAL", literal)
    assert_refused(post(anonymous_client, token, raw), 400, "metrics.vibration", contains=literal)


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_a_number_beyond_double_range_is_refused(anonymous_client, token):
    raw = '{"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"vibration": 1e400}}'
    assert_refused(post(anonymous_client, token, raw), 400, "metrics.vibration", contains="finite")


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_an_integer_beyond_64_bits_is_refused(anonymous_client, token):
    raw = '{"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"counter": 9223372036854775808}}'
    assert_refused(post(anonymous_client, token, raw), 400, "metrics.counter", contains="64 bits")


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_an_integer_with_thousands_of_digits_is_refused_naming_the_metric(anonymous_client, token):
    # Python refuses to convert integers of more than 4300 digits (a guard against slow parsing).
    raw = '{"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"counter": DIGITS}}'
    response = post(anonymous_client, token, raw.replace("DIGITS", "9" * 5000))
    assert_refused(response, 400, "metrics.counter", contains="out of range")
    assert len(response.content) < 1000


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_json_nested_deeper_than_the_parser_goes_is_refused(anonymous_client, token):
    response = post(anonymous_client, token, "[" * 100_000 + "]" * 100_000)
    assert_refused(response, 400, "body", contains="nested")


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
@pytest.mark.parametrize("field", ["version", "serial_number"])
def test_a_deeply_nested_value_in_a_field_is_refused_with_a_short_message(anonymous_client, token, field):
    body = json.dumps(message()).replace(
        '"VIB-SN-001"' if field == "serial_number" else '"0.0.1"', "[" * 900 + "]" * 900
    )
    response = post(anonymous_client, token, body)
    assert_refused(response, 400, field, contains="must be a string")
    assert len(response.content) < 1000


@pytest.mark.django_db
def test_the_largest_64_bit_integer_is_stored_exactly(anonymous_client, token, device):
    raw = '{"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"counter": 9223372036854775807}}'
    assert post(anonymous_client, token, raw).status_code == 201
    assert Telemetry.objects.get(device=device).payload["metrics"]["counter"] == 2**63 - 1


@pytest.mark.django_db
@pytest.mark.parametrize("hours", [17, -17, 23])
def test_a_timestamp_with_an_offset_postgresql_cannot_store_is_stored_as_the_same_instant(
    anonymous_client, token, device, hours
):
    # ISO 8601 allows offsets up to ±23:59; PostgreSQL's timestamptz input stops at ±15:59.
    instant = timezone.now().replace(microsecond=0) - timedelta(minutes=10)
    sent = instant.astimezone(timezone.get_fixed_timezone(hours * 60)).isoformat()

    response = post(anonymous_client, token, {**message(), "timestamp": sent})

    assert response.status_code == 201, response.content
    assert response.json()["readings"][0]["timestamp"] == instant.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert Telemetry.objects.get(device=device).timestamp == instant


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_a_timestamp_too_far_in_the_future_is_refused(anonymous_client, token, settings):
    settings.IOTHUB_INGEST_MAX_FUTURE_SKEW = timedelta(seconds=60)
    ahead = (timezone.now() + timedelta(minutes=5)).isoformat()
    assert_refused(
        post(anonymous_client, token, {**message(), "timestamp": ahead}), 400, "timestamp", contains="future"
    )


@pytest.mark.django_db
def test_a_timestamp_within_the_skew_is_accepted(anonymous_client, token, settings):
    settings.IOTHUB_INGEST_MAX_FUTURE_SKEW = timedelta(seconds=60)
    ahead = (timezone.now() + timedelta(seconds=20)).isoformat()
    assert post(anonymous_client, token, {**message(), "timestamp": ahead}).status_code == 201


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_a_timestamp_older_than_retention_is_refused(anonymous_client, token):
    old = (timezone.now() - timedelta(days=400)).isoformat()
    assert_refused(
        post(anonymous_client, token, {**message(), "timestamp": old}), 400, "timestamp", contains="retention"
    )


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_malformed_json_is_refused(anonymous_client, token):
    assert_refused(post(anonymous_client, token, '{"version": "0.0.1",'), 400, "body", contains="malformed JSON")


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
@pytest.mark.parametrize("raw", ['"text"', "42", "null"])
def test_a_body_that_is_not_a_message_or_a_list_is_refused(anonymous_client, token, raw):
    assert_refused(post(anonymous_client, token, raw), 400, "body", contains="JSON object")


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_a_wrong_content_type_is_refused(anonymous_client, token):
    response = post(anonymous_client, token, json.dumps(message()), content_type="text/plain")
    assert_refused(response, 415, "Content-Type", contains="application/json")


# --- Refused: the batch ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_a_batch_with_one_bad_message_stores_none_and_names_its_index(anonymous_client, token):
    batch = [message(vibration=1.0), message(vibration=2.0), message(vibration="high"), message(vibration=4.0)]
    assert_refused(post(anonymous_client, token, batch), 400, "metrics.vibration", index=2)


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_an_empty_batch_is_refused(anonymous_client, token):
    assert_refused(post(anonymous_client, token, []), 400, "body", contains="empty")


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_a_batch_over_the_message_cap_is_refused_saying_the_cap(anonymous_client, token, settings):
    settings.IOTHUB_INGEST_MAX_BATCH = 5
    assert_refused(post(anonymous_client, token, [message()] * 6), 413, "body", contains="limit is 5")


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_a_body_over_the_size_cap_is_refused_saying_the_cap(anonymous_client, token, settings):
    settings.IOTHUB_INGEST_MAX_BODY_BYTES = 2048
    assert_refused(post(anonymous_client, token, [message()] * 40), 413, "body", contains="2048 bytes")


@pytest.mark.django_db
def test_a_batch_at_the_default_cap_is_accepted(anonymous_client, token, device, settings):
    batch = [message(vibration=float(i)) for i in range(settings.IOTHUB_INGEST_MAX_BATCH)]
    response = post(anonymous_client, token, batch)
    assert response.status_code == 201, response.content[:300]
    assert Telemetry.objects.filter(device=device).count() == settings.IOTHUB_INGEST_MAX_BATCH


# --- Refused: who sends ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_device_cannot_write_another_devices_rows(anonymous_client, token, device, vibration_type):
    other = device_create(device_type=vibration_type, name="Press 4", serial_number="VIB-SN-002").device
    before = Telemetry.objects.count()

    response = post(anonymous_client, token, [message(), message(serial="VIB-SN-002")])

    assert_refused(response, 403, "serial_number", index=1, contains="VIB-SN-002")
    assert Telemetry.objects.count() == before
    other.refresh_from_db()
    assert other.last_seen is None


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_no_token_is_refused_with_401_and_the_scheme(anonymous_client):
    response = anonymous_client.post(URL, data=json.dumps(message()), content_type="application/json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_an_unknown_token_is_refused(anonymous_client):
    assert post(anonymous_client, "iot_not-a-real-token", message()).status_code == 401


@pytest.mark.django_db
@pytest.mark.usefixtures("nothing_written")
def test_a_user_token_cannot_send_telemetry(operator_client):
    response = operator_client.post(URL, data=json.dumps(message()), content_type="application/json")
    assert response.status_code == 401


@pytest.mark.django_db
def test_a_rotated_token_stops_working_at_once_and_the_new_one_works(anonymous_client, token, device):
    new_token = device_rotate_token(device=device).token
    assert post(anonymous_client, token, message()).status_code == 401
    assert post(anonymous_client, new_token, message()).status_code == 201


@pytest.mark.django_db
def test_a_revoked_token_is_refused(anonymous_client, token, device):
    device_revoke_token(device=device)
    assert post(anonymous_client, token, message()).status_code == 401
    assert Telemetry.objects.count() == 0


@pytest.mark.django_db
def test_a_deleted_devices_token_is_refused(anonymous_client, token, device):
    device.delete()
    assert post(anonymous_client, token, message()).status_code == 401

"""The device-types endpoints: CRUD, and every validation rule refusing bad input without writing."""

from decimal import Decimal

import pytest

from iothub.devices.models import DeviceType

URL = "/api/v1/device-types/"

VALID = {
    "name": "thermo_probe",
    "description": "Oven probe",
    "metric_name": "temperature",
    "metric_unit": "celsius",
    "metric_min": "-20.5",
    "metric_max": "250",
}


def detail_url(device_type: DeviceType) -> str:
    return f"{URL}{device_type.pk}/"


def test_create_returns_the_type_with_spec_field_names(operator_client, db):
    response = operator_client.post(URL, VALID)

    assert response.status_code == 201, response.data
    body = response.json()
    assert set(body) == {
        "id",
        "name",
        "description",
        "metric_name",
        "metric_unit",
        "metric_min",
        "metric_max",
        "created_at",
    }
    stored = DeviceType.objects.get(pk=body["id"])
    assert (stored.name, stored.metric_min, stored.metric_max) == ("thermo_probe", Decimal("-20.5"), 250)
    # Decimals travel as strings at the column's scale, so no precision is lost in JSON.
    assert body["metric_min"] == "-20.5000"


def test_create_ignores_read_only_id_and_created_at(operator_client, db):
    forced_id = "00000000-0000-0000-0000-000000000001"
    response = operator_client.post(URL, {**VALID, "id": forced_id, "created_at": "2000-01-01T00:00:00Z"})

    assert response.status_code == 201
    assert response.json()["id"] != forced_id
    assert not response.json()["created_at"].startswith("2000")


def test_list_is_paginated_and_searchable(viewer_client, vibration_type, operator_client):
    operator_client.post(URL, VALID)

    everything = viewer_client.get(URL).json()
    found = viewer_client.get(URL, {"search": "thermo"}).json()
    by_metric = viewer_client.get(URL, {"metric_name": "vibration"}).json()

    assert everything["count"] == 2 and {"next", "previous", "results"} <= set(everything)
    assert [t["name"] for t in found["results"]] == ["thermo_probe"]
    assert [t["name"] for t in by_metric["results"]] == ["vibration_sensor"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"metric_name": "humidity"}, "metric_name"),
        ({"metric_min": "30", "metric_max": "10"}, "metric_min"),
        ({"metric_min": "1.23456"}, "metric_min"),
        ({"metric_max": "123456789012"}, "metric_max"),
        ({"metric_max": "NaN"}, "metric_max"),
        ({"metric_min": "a lot"}, "metric_min"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"metric_unit": None}, "metric_unit"),
    ],
)
def test_create_refuses_bad_input_naming_the_field_and_writes_nothing(operator_client, db, change, field):
    response = operator_client.post(URL, {**VALID, **change})

    assert response.status_code == 400
    assert field in response.json()
    assert DeviceType.objects.count() == 0


def test_inverted_range_names_both_bounds(operator_client, db):
    response = operator_client.post(URL, {**VALID, "metric_min": "30", "metric_max": "10"})

    assert response.status_code == 400
    body = response.json()
    assert "metric_min" in body and "metric_max" in body
    assert "must not be greater than metric_max" in body["metric_min"][0]


def test_duplicate_name_is_refused_naming_the_field(operator_client, vibration_type):
    response = operator_client.post(URL, {**VALID, "name": "vibration_sensor"})

    assert response.status_code == 400
    assert "name" in response.json()
    assert DeviceType.objects.count() == 1


def test_rename_to_an_existing_name_is_refused(operator_client, vibration_type):
    other = operator_client.post(URL, VALID).json()

    response = operator_client.patch(f"{URL}{other['id']}/", {"name": "vibration_sensor"})

    assert response.status_code == 400
    assert "name" in response.json()
    assert DeviceType.objects.get(pk=other["id"]).name == "thermo_probe"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"metric_min": "30"}, "metric_min"),  # above the stored max of 25
        ({"metric_max": "-1"}, "metric_max"),  # below the stored min of 0
        ({"metric_name": "sound"}, "metric_name"),
        ({"metric_max": "0.00001"}, "metric_max"),
    ],
)
def test_partial_update_refuses_bad_input_and_leaves_the_row(operator_client, vibration_type, change, field):
    response = operator_client.patch(detail_url(vibration_type), change)

    assert response.status_code == 400
    assert field in response.json()
    vibration_type.refresh_from_db()
    assert (vibration_type.metric_name, vibration_type.metric_min, vibration_type.metric_max) == (
        "vibration",
        Decimal("0"),
        Decimal("25"),
    )


def test_full_update_with_an_inverted_range_is_refused(operator_client, vibration_type):
    response = operator_client.put(
        detail_url(vibration_type),
        {**VALID, "name": "vibration_sensor", "metric_min": "9", "metric_max": "8"},
    )

    assert response.status_code == 400
    assert "metric_max" in response.json()
    vibration_type.refresh_from_db()
    assert vibration_type.metric_unit == "mm_s"


def test_partial_update_changes_only_the_given_fields(operator_client, vibration_type):
    response = operator_client.patch(detail_url(vibration_type), {"metric_max": "40.25"})

    assert response.status_code == 200
    assert response.json()["metric_max"] == "40.2500"
    vibration_type.refresh_from_db()
    assert (vibration_type.metric_min, vibration_type.metric_max) == (Decimal("0"), Decimal("40.25"))
    assert vibration_type.description == "Vibration sensor on a press"


def test_clearing_a_bound_is_allowed(operator_client, vibration_type):
    response = operator_client.patch(detail_url(vibration_type), {"metric_min": None})

    assert response.status_code == 200
    vibration_type.refresh_from_db()
    assert vibration_type.metric_min is None


def test_delete_of_a_type_with_devices_is_a_conflict_saying_why(operator_client, device):
    response = operator_client.delete(detail_url(device.device_type))

    assert response.status_code == 409
    assert response.json()["detail"] == "Cannot delete: it is still referred to by 1 device."
    assert DeviceType.objects.filter(pk=device.device_type_id).exists()


def test_delete_of_an_unused_type(operator_client, vibration_type):
    response = operator_client.delete(detail_url(vibration_type))

    assert response.status_code == 204
    assert not DeviceType.objects.exists()


def test_unknown_id_is_404(viewer_client, db):
    assert viewer_client.get(f"{URL}00000000-0000-0000-0000-000000000000/").status_code == 404
    assert viewer_client.get(f"{URL}not-a-uuid/").status_code == 404


def test_decimals_are_accepted_as_json_numbers(operator_client, db):
    response = operator_client.post(URL, {**VALID, "metric_min": 0, "metric_max": 12.5})

    assert response.status_code == 201
    assert (response.json()["metric_min"], response.json()["metric_max"]) == ("0.0000", "12.5000")

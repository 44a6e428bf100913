"""The devices endpoints: CRUD, filters, the device credential, and every validation rule refusing
bad input without writing."""

import threading
import uuid

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from iothub.devices.models import Device
from iothub.devices.selectors import device_get_by_token
from iothub.events.models import Event
from iothub.notifications.models import NotificationDelivery, NotificationTemplate
from iothub.rules.models import Rule
from iothub.telemetry.models import Telemetry
from tests.locks import wait_until_a_transaction_waits_for_ours

URL = "/api/v1/devices/"


def detail_url(device: Device) -> str:
    return f"{URL}{device.pk}/"


@pytest.fixture
def new_device(vibration_type) -> dict:
    return {
        "device_type": str(vibration_type.pk),
        "name": "Press 7",
        "serial_number": "VIB-SN-007",
        "location": "Workshop B",
    }


# --- create, read, the token ----------------------------------------------------------------------


def test_create_returns_the_device_and_its_token_once(operator_client, new_device):
    response = operator_client.post(URL, new_device)

    assert response.status_code == 201, response.data
    body = response.json()
    assert set(body) == {
        "id",
        "device_type",
        "name",
        "serial_number",
        "location",
        "status",
        "last_seen",
        "created_at",
        "updated_at",
        "token",
    }
    assert body["status"] == "active" and body["last_seen"] is None
    assert device_get_by_token(token=body["token"]).pk == uuid.UUID(body["id"])


def test_token_is_never_shown_again(operator_client, new_device):
    created = operator_client.post(URL, new_device).json()

    retrieved = operator_client.get(f"{URL}{created['id']}/")
    listed = operator_client.get(URL)

    assert "token" not in retrieved.json()
    assert all("token" not in device for device in listed.json()["results"])
    for response in (retrieved, listed):
        assert created["token"] not in response.content.decode()
        assert "token_hash" not in response.content.decode()


def test_rotate_token_issues_a_new_one_and_the_old_stops_working(operator_client, device_with_token):
    device = device_with_token.device

    response = operator_client.post(f"{detail_url(device)}rotate-token/")

    assert response.status_code == 200
    new_token = response.json()["token"]
    assert new_token != device_with_token.token
    assert device_get_by_token(token=device_with_token.token) is None
    assert device_get_by_token(token=new_token).pk == device.pk
    assert response.json()["serial_number"] == "VIB-SN-001"


def test_viewer_cannot_rotate_a_token(viewer_client, device_with_token):
    response = viewer_client.post(f"{detail_url(device_with_token.device)}rotate-token/")

    assert response.status_code == 403
    assert device_get_by_token(token=device_with_token.token).pk == device_with_token.device.pk


def test_create_ignores_read_only_fields(operator_client, new_device):
    forced = {
        "id": str(uuid.uuid4()),
        "last_seen": "2020-01-01T00:00:00Z",
        "created_at": "2020-01-01T00:00:00Z",
    }

    body = operator_client.post(URL, {**new_device, **forced}).json()

    assert body["id"] != forced["id"]
    assert body["last_seen"] is None
    assert Device.objects.get(pk=body["id"]).last_seen is None


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "broken"}, "status"),
        ({"device_type": str(uuid.UUID(int=1))}, "device_type"),
        ({"device_type": "not-a-uuid"}, "device_type"),
        ({"device_type": None}, "device_type"),
        ({"serial_number": ""}, "serial_number"),
        ({"serial_number": "S" * 101}, "serial_number"),
        ({"name": ""}, "name"),
    ],
)
def test_create_refuses_bad_input_naming_the_field_and_writes_nothing(operator_client, new_device, change, field):
    response = operator_client.post(URL, {**new_device, **change})

    assert response.status_code == 400
    assert field in response.json()
    assert Device.objects.count() == 0


def test_duplicate_serial_number_is_refused_naming_the_field(operator_client, device, new_device):
    response = operator_client.post(URL, {**new_device, "serial_number": "VIB-SN-001"})

    assert response.status_code == 400
    assert "serial_number" in response.json()
    assert Device.objects.count() == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "broken"}, "status"),
        ({"serial_number": "VIB-SN-001"}, "serial_number"),
        ({"device_type": str(uuid.UUID(int=1))}, "device_type"),
        ({"name": None}, "name"),
    ],
)
def test_update_refuses_bad_input_and_leaves_the_row(operator_client, device, new_device, change, field):
    other = operator_client.post(URL, new_device).json()

    response = operator_client.patch(f"{URL}{other['id']}/", change)

    assert response.status_code == 400
    assert field in response.json()
    stored = Device.objects.get(pk=other["id"])
    assert (stored.name, stored.serial_number, stored.status) == ("Press 7", "VIB-SN-007", "active")


@pytest.mark.django_db(transaction=True)
def test_duplicate_serial_number_created_concurrently_is_a_conflict_not_a_500(operator_client, new_device):
    """Two requests for one serial: both pass validation, the database refuses the second."""
    result = {}

    def post_in_another_connection():
        try:
            result["response"] = operator_client.post(URL, new_device)
        finally:
            connections.close_all()

    with transaction.atomic():
        Device.objects.create(device_type_id=new_device["device_type"], name="First", serial_number="VIB-SN-007")
        racer = threading.Thread(target=post_in_another_connection)
        racer.start()
        wait_until_a_transaction_waits_for_ours()
    racer.join(timeout=30)

    assert result["response"].status_code == 409
    assert "serial_number" in result["response"].json()["detail"]
    assert list(Device.objects.values_list("name", flat=True)) == ["First"]


# --- update and delete ---------------------------------------------------------------------------


def test_partial_update_leaves_last_seen_and_other_fields(operator_client, device):
    seen = timezone.now().replace(microsecond=0)
    Device.objects.filter(pk=device.pk).update(last_seen=seen)

    response = operator_client.patch(detail_url(device), {"location": "Workshop C", "last_seen": None})

    assert response.status_code == 200
    device.refresh_from_db()
    assert (device.location, device.name, device.last_seen) == ("Workshop C", "Press 3", seen)


def test_full_update(operator_client, device, vibration_type):
    response = operator_client.put(
        detail_url(device),
        {
            "device_type": str(vibration_type.pk),
            "name": "Press 3b",
            "serial_number": "VIB-SN-001b",
            "status": "inactive",
            "location": None,
        },
    )

    assert response.status_code == 200
    device.refresh_from_db()
    assert (device.name, device.serial_number, device.status, device.location) == (
        "Press 3b",
        "VIB-SN-001b",
        "inactive",
        None,
    )


def test_delete_removes_the_device_with_its_telemetry_rules_events_and_deliveries(operator_client, device):
    Telemetry.objects.create(device=device, payload={"version": "0.0.1", "metrics": {"vibration": 5.2}})
    rule = Rule.objects.create(device=device, name="High", operator="gt", threshold=20, action_config=[])
    event = Event.objects.create(rule=rule, severity="warning", message="High vibration")
    template = NotificationTemplate.objects.create(name="t", message_template="m", recipients=[])
    NotificationDelivery.objects.create(
        event=event,
        template=template,
        recipient_type="email",
        recipient_address="a@b.c",
        rendered_message="m",
    )

    response = operator_client.delete(detail_url(device))

    assert response.status_code == 204
    assert not Device.objects.exists()
    assert not Telemetry.objects.exists()
    assert not Rule.objects.exists()
    assert not Event.objects.exists()
    assert not NotificationDelivery.objects.exists()
    assert NotificationTemplate.objects.exists()


# --- list: filters, search, ordering, pagination -------------------------------------------------


@pytest.fixture
def fleet(operator_client, device, vibration_type):
    """Press 3 (VIB-SN-001, Workshop A, active) and three more."""
    for name, serial, location, status in [
        ("Oven 1", "OV-1", "Workshop B", "error"),
        ("Oven 2", "OV-2", "Workshop B", "inactive"),
        ("Lathe", "LT-9", None, "active"),
    ]:
        created = operator_client.post(
            URL,
            {
                "device_type": str(vibration_type.pk),
                "name": name,
                "serial_number": serial,
                "location": location,
                "status": status,
            },
        )
        assert created.status_code == 201


def names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [device["name"] for device in response.json()["results"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["Lathe", "Oven 1", "Oven 2", "Press 3"]),
        ({"status": "active"}, ["Lathe", "Press 3"]),
        ({"location": "Workshop B"}, ["Oven 1", "Oven 2"]),
        ({"search": "oven"}, ["Oven 1", "Oven 2"]),
        ({"search": "SN-001"}, ["Press 3"]),
        ({"ordering": "-serial_number"}, ["Press 3", "Oven 2", "Oven 1", "Lathe"]),
        ({"status": "error", "location": "Workshop B"}, ["Oven 1"]),
    ],
)
def test_list_filters_search_and_ordering(viewer_client, fleet, params, expected):
    assert names(viewer_client.get(URL, params)) == expected


def test_filter_by_device_type(viewer_client, fleet, operator_client, new_device):
    other_type = operator_client.post(
        "/api/v1/device-types/", {"name": "probe", "metric_name": "pressure", "metric_unit": "bar"}
    ).json()
    operator_client.post(URL, {**new_device, "device_type": other_type["id"]})

    assert names(viewer_client.get(URL, {"device_type": other_type["id"]})) == ["Press 7"]


def test_unknown_filter_values_are_refused_naming_the_parameter(viewer_client, fleet):
    by_status = viewer_client.get(URL, {"status": "broken"})
    by_type = viewer_client.get(URL, {"device_type": str(uuid.UUID(int=1))})

    assert by_status.status_code == 400 and "status" in by_status.json()
    assert by_type.status_code == 400 and "device_type" in by_type.json()


def test_list_is_paginated(viewer_client, fleet):
    first = viewer_client.get(URL, {"page_size": 3}).json()
    second = viewer_client.get(URL, {"page_size": 3, "page": 2}).json()

    assert first["count"] == 4
    assert [d["name"] for d in first["results"] + second["results"]] == [
        "Lathe",
        "Oven 1",
        "Oven 2",
        "Press 3",
    ]
    assert first["next"] and second["next"] is None


def test_the_list_reads_only_the_columns_it_shows(viewer_client, fleet):
    # A page of 1,000 devices spent a third of its time building each device's type and decoding
    # its `latest_metrics` JSON and credential hashes, none of which the list shows.
    with CaptureQueriesContext(connection) as queries:
        body = viewer_client.get(URL, {"page_size": 1000}).json()

    page = [q["sql"] for q in queries if 'FROM "devices"' in q["sql"] and "COUNT(" not in q["sql"]]
    assert len(page) == 1 and len(body["results"]) == 4
    for hidden in ("latest_metrics", "token_hash", "mqtt_password_hash", '"device_types"'):
        assert hidden not in page[0]
    assert set(body["results"][0]) == {
        "id",
        "device_type",
        "name",
        "serial_number",
        "location",
        "status",
        "last_seen",
        "created_at",
        "updated_at",
    }

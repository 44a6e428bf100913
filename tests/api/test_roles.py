"""Who may do what: anonymous 401 (but health and docs), `viewer` reads, `operator` writes,
superusers everything, a user without a role nothing; token and session authentication."""

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from iothub.devices.models import Device, DeviceType

NEW_TYPE = {"name": "probe", "metric_name": "pressure", "metric_unit": "bar"}


def _new_device(device_type: DeviceType) -> dict:
    return {"device_type": str(device_type.pk), "name": "Press 9", "serial_number": "VIB-SN-009"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/"),
        ("get", "/api/v1/devices/"),
        ("get", "/api/v1/device-types/"),
        ("post", "/api/v1/devices/"),
        ("post", "/api/v1/device-types/"),
        ("get", "/api/v1/devices/{device}/"),
        ("patch", "/api/v1/devices/{device}/"),
        ("delete", "/api/v1/devices/{device}/"),
        ("post", "/api/v1/devices/{device}/rotate-token/"),
    ],
)
def test_anonymous_gets_401_with_the_scheme_to_use(anonymous_client, device, method, path):
    response = getattr(anonymous_client, method)(path.format(device=device.pk))

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert Device.objects.filter(pk=device.pk, name="Press 3").exists()


def test_a_wrong_token_gets_401(device):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.get("/api/v1/devices/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("path", ["/api/v1/health/", "/api/schema/", "/api/docs/"])
def test_health_and_api_docs_are_open_to_anonymous(anonymous_client, db, path):
    assert anonymous_client.get(path).status_code == 200


def test_viewer_reads_everything(viewer_client, device):
    assert viewer_client.get("/api/v1/devices/").json()["count"] == 1
    assert viewer_client.get(f"/api/v1/devices/{device.pk}/").status_code == 200
    assert viewer_client.get("/api/v1/device-types/").json()["count"] == 1


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("post", "/api/v1/device-types/", NEW_TYPE),
        ("patch", "/api/v1/device-types/{type}/", {"metric_unit": "g"}),
        ("delete", "/api/v1/device-types/{type}/", None),
        ("post", "/api/v1/devices/", "new device"),
        ("put", "/api/v1/devices/{device}/", "new device"),
        ("patch", "/api/v1/devices/{device}/", {"name": "Renamed"}),
        ("delete", "/api/v1/devices/{device}/", None),
    ],
)
def test_viewer_cannot_write(viewer_client, device, method, path, payload):
    if payload == "new device":
        payload = _new_device(device.device_type)
    before = list(Device.objects.values()), list(DeviceType.objects.values())

    response = getattr(viewer_client, method)(path.format(type=device.device_type_id, device=device.pk), payload)

    assert response.status_code == 403
    assert "viewer" in response.json()["detail"] and "operator" in response.json()["detail"]
    assert (list(Device.objects.values()), list(DeviceType.objects.values())) == before


def test_operator_writes(operator_client, vibration_type):
    created = operator_client.post("/api/v1/devices/", _new_device(vibration_type))
    renamed = operator_client.patch(f"/api/v1/devices/{created.json()['id']}/", {"name": "Renamed"})
    deleted = operator_client.delete(f"/api/v1/devices/{created.json()['id']}/")

    assert (created.status_code, renamed.status_code, deleted.status_code) == (201, 200, 204)
    assert not Device.objects.exists()


def test_superuser_without_a_role_writes(admin_client_api, vibration_type):
    response = admin_client_api.post("/api/v1/devices/", _new_device(vibration_type))

    assert response.status_code == 201
    assert Device.objects.count() == 1


def test_user_without_a_role_gets_403_even_to_read(device):
    user = User.objects.create_user("nobody", password="pw-nobody")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    response = client.get("/api/v1/devices/")

    assert response.status_code == 403
    assert "role" in response.json()["detail"]


def test_session_login_works_like_a_token(viewer_user, device):
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="victor", password="pw-victor")

    read = client.get("/api/v1/devices/")
    write = client.post("/api/v1/devices/", _new_device(device.device_type))

    assert read.status_code == 200 and read.json()["count"] == 1
    assert write.status_code == 403
    assert Device.objects.count() == 1


def test_drf_create_token_gives_a_user_a_working_token(operator_user, device):
    out = io.StringIO()

    call_command("drf_create_token", "olga", stdout=out)

    key = Token.objects.get(user=operator_user).key
    assert key in out.getvalue()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/devices/").json()["count"] == 1

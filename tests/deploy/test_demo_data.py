"""`load_demo` and `demo_access`: the demo rows, the admin login and the tokens a fresh hub prints."""

import io
import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from iothub.devices.models import Device, DeviceType
from iothub.devices.selectors import device_get_by_token

pytestmark = pytest.mark.django_db


def run(command: str, *args) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def device_token_in(output: str) -> str:
    match = re.search(r"Device .* token (iot_\S+)", output)
    assert match, output
    return match.group(1)


def test_load_demo_creates_exactly_the_spec_demo_rows():
    output = run("load_demo")

    assert list(DeviceType.objects.values_list("name", flat=True)) == ["vibration_sensor"]
    device_type = DeviceType.objects.get()
    assert (device_type.metric_name, device_type.metric_unit) == ("vibration", "mm_s")
    assert (device_type.metric_min, device_type.metric_max) == (Decimal("0"), Decimal("25"))
    device = Device.objects.get()
    assert (device.serial_number, device.name, device.location) == ("VIB-SN-001", "Press 3", "Workshop A")
    assert device.device_type == device_type
    assert device.status == "active"
    assert "device type vibration_sensor: created" in output
    assert 'device VIB-SN-001 "Press 3" in Workshop A: created' in output


def test_load_demo_twice_changes_nothing_and_reports_present():
    run("load_demo")
    before = list(Device.objects.values()) + list(DeviceType.objects.values())

    output = run("load_demo")

    assert list(Device.objects.values()) + list(DeviceType.objects.values()) == before
    assert "device type vibration_sensor: present" in output
    assert "device VIB-SN-001" in output and ": present" in output


def test_load_demo_leaves_a_person_s_edits_to_the_demo_device_alone():
    run("load_demo")
    Device.objects.filter(serial_number="VIB-SN-001").update(name="Press 3 (moved)", location="Workshop B")

    run("load_demo")

    device = Device.objects.get(serial_number="VIB-SN-001")
    assert (device.name, device.location) == ("Press 3 (moved)", "Workshop B")


def test_demo_access_creates_the_admin_with_a_generated_password_and_an_api_token(monkeypatch):
    monkeypatch.delenv("IOTHUB_ADMIN_PASSWORD", raising=False)
    run("load_demo")

    output = run("demo_access", "--base-url", "http://127.0.0.1:8123")

    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    password = re.search(r"Login +admin, password (\S+) +\(new", output).group(1)
    assert admin.check_password(password)
    token = Token.objects.get(user=admin).key
    assert f"API token  {token}" in output
    assert f'curl -H "Authorization: Token {token}" http://127.0.0.1:8123/api/v1/devices/' in output
    for url in ("/api/v1/", "/api/docs/", "/admin/"):
        assert f"http://127.0.0.1:8123{url}" in output


def test_demo_access_again_keeps_the_password_and_the_api_token(monkeypatch):
    monkeypatch.delenv("IOTHUB_ADMIN_PASSWORD", raising=False)
    run("load_demo")
    first = run("demo_access")
    password = re.search(r"password (\S+) +\(new", first).group(1)
    token = Token.objects.get(user__username="admin").key

    second = run("demo_access")

    assert User.objects.get(username="admin").check_password(password)
    assert "password unchanged" in second
    assert password not in second
    assert Token.objects.get(user__username="admin").key == token
    assert User.objects.filter(username="admin").count() == 1


def test_demo_access_reset_admin_password_sets_a_new_one(monkeypatch):
    monkeypatch.delenv("IOTHUB_ADMIN_PASSWORD", raising=False)
    run("load_demo")
    old = re.search(r"password (\S+) +\(new", run("demo_access")).group(1)

    output = run("demo_access", "--reset-admin-password")

    new = re.search(r"password (\S+) +\(new", output).group(1)
    admin = User.objects.get(username="admin")
    assert new != old
    assert admin.check_password(new) and not admin.check_password(old)


def test_demo_access_takes_the_password_from_the_environment_without_printing_it(monkeypatch):
    monkeypatch.setenv("IOTHUB_ADMIN_PASSWORD", "chosen-by-the-operator-42")
    run("load_demo")

    output = run("demo_access")

    assert User.objects.get(username="admin").check_password("chosen-by-the-operator-42")
    assert "chosen-by-the-operator-42" not in output
    assert "password from IOTHUB_ADMIN_PASSWORD" in output


def test_demo_access_issues_a_new_device_token_each_run_and_the_old_one_stops_working():
    run("load_demo")
    first = device_token_in(run("demo_access"))
    assert device_get_by_token(token=first).serial_number == "VIB-SN-001"

    second = device_token_in(run("demo_access"))

    assert second != first
    assert device_get_by_token(token=first) is None
    assert device_get_by_token(token=second).serial_number == "VIB-SN-001"


def test_demo_access_keep_device_token_leaves_the_token_working():
    run("load_demo")
    token = device_token_in(run("demo_access"))

    output = run("demo_access", "--keep-device-token")

    assert "token unchanged" in output
    assert "iot_" not in output
    assert device_get_by_token(token=token).serial_number == "VIB-SN-001"

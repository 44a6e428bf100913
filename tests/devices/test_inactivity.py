"""Devices that stop reporting become inactive; the next reading makes them active again."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from iothub.devices.models import Device
from iothub.devices.services import device_create, devices_mark_inactive


@pytest.fixture
def fleet(vibration_type):
    now = timezone.now()

    def make(serial, *, last_seen, status="active", created_ago=timedelta(days=1)):
        device = device_create(device_type=vibration_type, name=serial, serial_number=serial).device
        Device.objects.filter(pk=device.pk).update(last_seen=last_seen, status=status, created_at=now - created_ago)
        return device

    return {
        "silent": make("SILENT", last_seen=now - timedelta(minutes=11)),
        "erroring_silent": make("ERR-SILENT", last_seen=now - timedelta(hours=2), status="error"),
        "recent": make("RECENT", last_seen=now - timedelta(minutes=9)),
        "never_old": make("NEVER-OLD", last_seen=None),
        "never_new": make("NEVER-NEW", last_seen=None, created_ago=timedelta(minutes=1)),
    }


def statuses():
    return dict(Device.objects.values_list("serial_number", "status"))


@pytest.mark.django_db
def test_devices_silent_longer_than_the_setting_become_inactive(fleet):
    changed = devices_mark_inactive(silent_for=timedelta(minutes=10))

    assert changed == 3
    assert statuses() == {
        "SILENT": "inactive",
        "ERR-SILENT": "inactive",
        "RECENT": "active",
        "NEVER-OLD": "inactive",
        "NEVER-NEW": "active",
    }
    assert devices_mark_inactive(silent_for=timedelta(minutes=10)) == 0  # already inactive


@pytest.mark.django_db
def test_the_command_uses_the_setting(fleet, settings):
    settings.IOTHUB_INACTIVE_AFTER_SECONDS = 3 * 3600
    out = io.StringIO()
    call_command("mark_inactive_devices", stdout=out)
    assert "1 device(s) marked inactive" in out.getvalue()  # only NEVER-OLD (created a day ago)
    assert statuses()["ERR-SILENT"] == "error"


@pytest.mark.django_db
def test_the_command_takes_the_silence_as_an_argument(fleet):
    call_command("mark_inactive_devices", "--after-seconds", "60", stdout=io.StringIO())
    assert statuses()["RECENT"] == "inactive"


@pytest.mark.django_db
def test_an_inactive_device_is_active_again_after_its_next_reading(anonymous_client, device_with_token):
    device = device_with_token.device
    Device.objects.filter(pk=device.pk).update(last_seen=timezone.now() - timedelta(hours=1))
    devices_mark_inactive(silent_for=timedelta(minutes=10))
    device.refresh_from_db()
    assert device.status == "inactive"

    response = anonymous_client.post(
        "/api/v1/telemetry/",
        data=json.dumps({"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"vibration": 3.0}}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {device_with_token.token}",
    )
    assert response.status_code == 201
    device.refresh_from_db()
    assert device.status == "active"

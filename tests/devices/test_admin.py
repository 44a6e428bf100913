"""Device types and devices in the Django admin: lists, filters, search; never the token hash."""

import pytest
from django.test import Client

from iothub.devices.models import Device


@pytest.fixture
def admin_browser(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.mark.parametrize("query", ["", "?status__exact=active", "?q=VIB-SN", "?location=Workshop+A"])
def test_device_changelist_renders_with_data(admin_browser, device, query):
    response = admin_browser.get(f"/admin/devices/device/{query}")

    assert response.status_code == 200
    assert "VIB-SN-001" in response.content.decode()
    assert "Workshop A" in response.content.decode()


def test_device_changelist_date_hierarchy_narrows_by_creation(admin_browser, device):
    this_year = admin_browser.get(f"/admin/devices/device/?created_at__year={device.created_at.year}")
    long_ago = admin_browser.get("/admin/devices/device/?created_at__year=2001")

    assert "VIB-SN-001" in this_year.content.decode()
    assert long_ago.status_code == 200 and "VIB-SN-001" not in long_ago.content.decode()


def test_device_changelist_filters_by_type(admin_browser, device):
    response = admin_browser.get(f"/admin/devices/device/?device_type__id__exact={device.device_type_id}")

    assert response.status_code == 200
    assert "VIB-SN-001" in response.content.decode()


def test_device_type_changelist_renders_with_data(admin_browser, vibration_type):
    response = admin_browser.get("/admin/devices/devicetype/?q=vibration")

    assert response.status_code == 200
    assert "vibration_sensor" in response.content.decode()
    assert "mm_s" in response.content.decode()


def test_device_change_page_never_shows_the_token_hash(admin_browser, device):
    response = admin_browser.get(f"/admin/devices/device/{device.pk}/change/")

    assert response.status_code == 200
    page = response.content.decode()
    assert device.token_hash and device.token_hash not in page
    assert "token_hash" not in page


def test_admin_form_refuses_an_inverted_range(admin_browser, vibration_type):
    response = admin_browser.post(
        f"/admin/devices/devicetype/{vibration_type.pk}/change/",
        {
            "name": "vibration_sensor",
            "metric_name": "vibration",
            "metric_unit": "mm_s",
            "metric_min": "9",
            "metric_max": "1",
        },
    )

    assert response.status_code == 200  # the form again, with the error
    assert "must not be greater than metric_max" in response.content.decode()
    vibration_type.refresh_from_db()
    assert vibration_type.metric_max == 25


def test_admin_edit_keeps_the_device_credential(admin_browser, device):
    token_hash = device.token_hash

    response = admin_browser.post(
        f"/admin/devices/device/{device.pk}/change/",
        {
            "device_type": str(device.device_type_id),
            "name": "Press 3 renamed",
            "serial_number": "VIB-SN-001",
            "location": "Workshop A",
            "status": "active",
        },
    )

    assert response.status_code == 302
    device = Device.objects.get(pk=device.pk)
    assert (device.name, device.token_hash) == ("Press 3 renamed", token_hash)

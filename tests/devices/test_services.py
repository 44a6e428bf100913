"""The registry's write services: validation before any write, partial updates that touch only
their fields, deletes, and the device credential kept only as a hash."""

import threading
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connections, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from iothub.devices.models import Device, DeviceType
from iothub.devices.selectors import device_get_by_token
from iothub.devices.services import (
    device_create,
    device_delete,
    device_rotate_token,
    device_token_hash,
    device_type_delete,
    device_type_update,
    device_update,
)


def test_device_token_is_stored_only_as_its_hash(device_with_token):
    device = Device.objects.get(pk=device_with_token.device.pk)

    assert device.token_hash == device_token_hash(device_with_token.token)
    assert device_with_token.token not in {device.token_hash, device.name, device.serial_number}


def test_rotation_replaces_the_hash(device_with_token):
    rotated = device_rotate_token(device=device_with_token.device)

    assert device_get_by_token(token=device_with_token.token) is None
    assert device_get_by_token(token=rotated.token).pk == device_with_token.device.pk


def test_create_validates_before_writing(vibration_type, device):
    with pytest.raises(ValidationError) as refused:
        device_create(device_type=vibration_type, name="Twin", serial_number="VIB-SN-001", status="gone")

    assert {"serial_number", "status"} <= set(refused.value.message_dict)
    assert Device.objects.count() == 1


def test_type_update_checks_the_range_against_the_stored_bound(vibration_type):
    with pytest.raises(ValidationError) as refused:
        device_type_update(device_type=vibration_type, data={"metric_min": Decimal("26")})

    assert "metric_min" in refused.value.message_dict
    assert DeviceType.objects.get(pk=vibration_type.pk).metric_min == 0


def test_type_update_refuses_fields_it_does_not_own(vibration_type):
    with pytest.raises(TypeError, match="created_at"):
        device_type_update(device_type=vibration_type, data={"created_at": timezone.now()})


@pytest.mark.django_db(transaction=True)
def test_concurrent_partial_updates_cannot_invert_the_range(vibration_type):
    """One request raises metric_min to 20 while another lowers metric_max to 10: each alone is
    valid against the stored 0..25, together they are not, so the second must be refused."""
    outcome = {}

    def lower_max_in_another_connection():
        try:
            device_type_update(device_type=vibration_type, data={"metric_max": Decimal("10")})
            outcome["second"] = "saved"
        except ValidationError as refused:
            outcome["second"] = refused.message_dict
        finally:
            connections.close_all()

    with transaction.atomic():
        device_type_update(device_type=vibration_type, data={"metric_min": Decimal("20")})
        second = threading.Thread(target=lower_max_in_another_connection)
        second.start()
        second.join(timeout=0.5)  # it waits on our row lock until we commit
        assert second.is_alive()
    second.join(timeout=30)

    assert "metric_max" in outcome["second"]
    stored = DeviceType.objects.get(pk=vibration_type.pk)
    assert (stored.metric_min, stored.metric_max) == (Decimal("20"), Decimal("25"))


def test_device_update_never_writes_back_a_stale_last_seen(device):
    stale = Device.objects.get(pk=device.pk)
    seen = timezone.now()
    Device.objects.filter(pk=device.pk).update(last_seen=seen, status="error")  # ingest, meanwhile

    device_update(device=stale, data={"name": "Press 3b"})

    stored = Device.objects.get(pk=device.pk)
    assert (stored.name, stored.last_seen, stored.status) == ("Press 3b", seen, "error")


def test_device_update_refuses_last_seen(device):
    with pytest.raises(TypeError, match="last_seen"):
        device_update(device=device, data={"last_seen": timezone.now()})


def test_type_with_devices_cannot_be_deleted(device):
    with pytest.raises(ProtectedError):
        device_type_delete(device_type=device.device_type)

    assert DeviceType.objects.filter(pk=device.device_type_id).exists()


def test_device_delete(device):
    device_delete(device=device)

    assert not Device.objects.exists()

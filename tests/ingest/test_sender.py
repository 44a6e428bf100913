"""What ingest reads per request in one query: the device, its type and its enabled rules."""

from decimal import Decimal

import pytest

from iothub.devices.services import device_revoke_token
from iothub.ingest.selectors import sender_get_by_token
from iothub.rules.models import Rule
from tests.rules.helpers import make_rule


@pytest.mark.django_db
def test_the_sender_carries_its_type_and_only_its_enabled_rules_as_stored(device_with_token):
    device = device_with_token.device
    first = make_rule(device, name="first", threshold="15.5")
    make_rule(device, name="off", is_enabled=False)
    second = make_rule(device, name="second", metric="temperature", severity="critical")

    sender = sender_get_by_token(token=device_with_token.token)

    assert sender.device.id == device.id
    assert sender.device.device_type.metric_max == Decimal("25")
    assert sorted(r.name for r in sender.rules) == ["first", "second"]
    for read in sender.rules:
        stored = Rule.objects.get(pk=read.pk)
        assert [getattr(read, f.attname) for f in Rule._meta.concrete_fields] == [
            getattr(stored, f.attname) for f in Rule._meta.concrete_fields
        ]
    assert {first.pk, second.pk} == {r.pk for r in sender.rules}
    assert isinstance(sender.rules[0].action_config, list)  # JSON as Python, not text


@pytest.mark.django_db
def test_a_device_without_rules_is_found_with_none(device_with_token):
    sender = sender_get_by_token(token=device_with_token.token)
    assert sender.device.serial_number == "VIB-SN-001" and sender.rules == []


@pytest.mark.django_db
def test_an_unknown_or_revoked_token_finds_no_sender(device_with_token):
    assert sender_get_by_token(token="iot_unknown") is None
    device_revoke_token(device=device_with_token.device)
    assert sender_get_by_token(token=device_with_token.token) is None

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
        loaded = [f.attname for f in Rule._meta.concrete_fields if f.attname not in read.get_deferred_fields()]
        assert "threshold" in loaded and "last_triggered_at" in loaded and "action_config" in loaded
        assert [getattr(read, name) for name in loaded] == [getattr(stored, name) for name in loaded]
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


@pytest.mark.django_db
def test_raising_an_event_reads_nothing_the_sender_query_left_out(client, device_with_token):
    """The sender's fields are those ingest and event_raise use: a deferred one read later would
    cost a query per request (Django loads it silently)."""
    import json

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    device = device_with_token.device
    make_rule(device, name="high", threshold="15")
    body = {"version": "0.0.1", "serial_number": device.serial_number, "metrics": {"vibration": 20.0}}

    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            "/api/v1/telemetry/",
            data=json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {device_with_token.token}",
        )

    assert response.status_code == 201 and len(response.json()["events"]) == 1
    reads = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert not [
        sql for sql in reads if 'FROM "devices"' in sql or 'FROM "rules"' in sql or 'FROM "device_types"' in sql
    ]


def test_the_sender_defers_what_ingest_does_not_use():
    from iothub.ingest import selectors

    assert "latest_metrics" not in selectors._DEVICE and "token_hash" not in selectors._DEVICE
    assert "created_at" not in selectors._RULE

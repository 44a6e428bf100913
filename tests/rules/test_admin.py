"""Rules, events and machine commands in the admin; rules validated as the API validates them."""

import json

import pytest

from iothub.events.models import Event
from iothub.rules.models import Rule
from tests.rules.helpers import make_rule

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(client, admin_user):
    client.force_login(admin_user)
    return client


def form(device, **changes) -> dict:
    data = {
        "device": str(device.id),
        "name": "High vibration",
        "metric": "",
        "operator": "gt",
        "threshold": "15",
        "severity": "warning",
        "cooldown_minutes": "15",
        "is_enabled": "on",
        "action_config": json.dumps([{"type": "stop_machine", "machine_id": "M-123"}]),
    }
    data.update(changes)
    return data


def test_a_valid_rule_is_saved(admin, device):
    response = admin.post("/admin/rules/rule/add/", form(device))

    assert response.status_code == 302, response.content.decode()[:2000]
    rule = Rule.objects.get()
    assert (rule.metric, rule.action_config) == (None, [{"type": "stop_machine", "machine_id": "M-123"}])


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"action_config": json.dumps([{"type": "stop_machine"}])}, "[0].machine_id: is required"),
        ({"action_config": json.dumps([{"type": "reboot"}])}, "[0].type: &#x27;reboot&#x27; is not a known action"),
        ({"metric": "9lives"}, "is not a metric name"),
        ({"cooldown_minutes": "-1"}, "must be between 0 and"),
    ],
)
def test_an_invalid_rule_is_refused_with_the_apis_messages(admin, device, changes, error):
    response = admin.post("/admin/rules/rule/add/", form(device, **changes))

    assert response.status_code == 200
    assert error in response.content.decode()
    assert Rule.objects.count() == 0


def test_events_and_machine_commands_are_listed_read_only(admin, device):
    rule = make_rule(device)
    event = Event.objects.create(rule=rule, severity="warning", message="Vibration high", execution_results=[])

    assert "Vibration high" in admin.get("/admin/events/event/").content.decode()
    assert admin.get("/admin/events/event/add/").status_code == 403
    assert admin.get(f"/admin/events/event/{event.id}/change/").status_code == 200  # a view, no save
    assert admin.get("/admin/machines/machinecommand/").status_code == 200

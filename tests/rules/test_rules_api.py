"""`/api/v1/rules/`: CRUD, filters, validation naming the field, roles."""

import pytest

from iothub.devices.services import device_create
from iothub.events.models import Event
from iothub.notifications.models import NotificationTemplate
from iothub.rules.models import Rule
from tests.rules.helpers import make_rule

URL = "/api/v1/rules/"
pytestmark = pytest.mark.django_db


@pytest.fixture
def template(db):
    return NotificationTemplate.objects.create(name="alert", message_template="{message}", recipients=[])


def valid_body(device_, template, **changes) -> dict:
    body = {
        "device": str(device_.id),
        "name": "High vibration",
        "operator": "gt",
        "threshold": "15",
        "action_config": [
            {"type": "notification", "template_id": template.id, "recipients": ["admin@company.com"]},
            {"type": "stop_machine", "machine_id": "M-123"},
        ],
    }
    body.update(changes)
    return body


def test_create_a_rule_with_the_defaults(operator_client, device, template):
    response = operator_client.post(URL, valid_body(device, template), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["device"] == str(device.id)
    assert body["threshold"] == "15.0000"
    assert (body["metric"], body["severity"], body["cooldown_minutes"], body["is_enabled"]) == (
        None,
        "warning",
        15,
        True,
    )
    assert body["last_triggered_at"] is None
    rule = Rule.objects.get(pk=body["id"])
    assert rule.action_config == valid_body(device, template)["action_config"]


def test_create_with_every_field(operator_client, device, template):
    body = valid_body(
        device,
        template,
        description="Bearing wear",
        metric="temperature",
        operator="lte",
        threshold="-10.5",
        severity="critical",
        cooldown_minutes=0,
        is_enabled=False,
    )
    response = operator_client.post(URL, body, format="json")

    assert response.status_code == 201, response.content
    got = response.json()
    assert (got["metric"], got["operator"], got["threshold"], got["severity"]) == (
        "temperature",
        "lte",
        "-10.5000",
        "critical",
    )
    assert (got["cooldown_minutes"], got["is_enabled"], got["description"]) == (0, False, "Bearing wear")


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"operator": "between"}, "operator", "not a valid choice"),
        ({"threshold": "1.23456"}, "threshold", "4 decimal places"),
        ({"threshold": "123456789012.5"}, "threshold", "11 digits before the decimal point"),
        ({"threshold": "abc"}, "threshold", "valid number"),
        ({"cooldown_minutes": -1}, "cooldown_minutes", "greater than or equal to 0"),
        ({"cooldown_minutes": None}, "cooldown_minutes", "may not be null"),
        ({"action_config": []}, "action_config", "must hold at least one action"),
        ({"action_config": [{"type": "reboot"}]}, "action_config", "[0].type: 'reboot' is not a known action"),
        ({"action_config": [{"type": "stop_machine"}]}, "action_config", "[0].machine_id: is required"),
        (
            {"action_config": [{"type": "stop_machine", "machine_id": "M-1", "extra": 1}]},
            "action_config",
            "[0].extra: unknown key",
        ),
        ({"action_config": [{"type": "notification", "template_id": 999999}]}, "action_config", "does not exist"),
        ({"metric": "9lives"}, "metric", "is not a metric name"),
        ({"metric": "x" * 51}, "metric", "no more than 50 characters"),
        ({"severity": "urgent"}, "severity", "not a valid choice"),
        ({"device": "00000000-0000-0000-0000-000000000000"}, "device", "does not exist"),
        ({"name": ""}, "name", "may not be blank"),
    ],
)
def test_invalid_input_is_a_400_naming_the_field_and_writes_nothing(
    operator_client, device, template, changes, field, fragment
):
    response = operator_client.post(URL, valid_body(device, template, **changes), format="json")

    assert response.status_code == 400, response.content
    messages = response.json()[field]
    assert any(fragment in m for m in messages), messages
    assert Rule.objects.count() == 0


def test_an_inactive_template_is_refused(operator_client, device, template):
    template.is_active = False
    template.save()

    response = operator_client.post(URL, valid_body(device, template), format="json")

    assert response.status_code == 400
    assert response.json()["action_config"] == [f"[0].template_id: notification template {template.id} is not active"]


def test_missing_required_fields_are_named(operator_client):
    response = operator_client.post(URL, {}, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"device", "name", "operator", "threshold", "action_config"}


def test_filter_by_device_and_enabled(viewer_client, device, vibration_type):
    other = device_create(device_type=vibration_type, name="Press 4", serial_number="VIB-SN-002").device
    on = make_rule(device, name="on")
    off = make_rule(device, name="off", is_enabled=False)
    null = make_rule(device, name="null")
    Rule.objects.filter(pk=null.pk).update(is_enabled=None)
    elsewhere = make_rule(other, name="elsewhere")

    def ids(query):
        response = viewer_client.get(URL + query)
        assert response.status_code == 200
        return {r["id"] for r in response.json()["results"]}

    assert ids(f"?device={device.id}") == {str(on.id), str(off.id), str(null.id)}
    assert ids("?is_enabled=true") == {str(on.id), str(elsewhere.id)}
    assert ids(f"?device={device.id}&is_enabled=false") == {str(off.id), str(null.id)}


def test_patch_changes_only_the_given_fields(operator_client, device):
    rule = make_rule(device, severity="info", cooldown_minutes=5)

    response = operator_client.patch(f"{URL}{rule.id}/", {"threshold": 20, "is_enabled": False}, format="json")

    assert response.status_code == 200, response.content
    rule.refresh_from_db()
    assert (str(rule.threshold), rule.is_enabled, rule.severity, rule.cooldown_minutes) == ("20.0000", False, "info", 5)


def test_patch_with_an_invalid_action_config_writes_nothing(operator_client, device):
    rule = make_rule(device)

    response = operator_client.patch(
        f"{URL}{rule.id}/", {"action_config": [{"type": "stop_machine", "machine_id": ""}]}, format="json"
    )

    assert response.status_code == 400
    assert "machine_id" in response.json()["action_config"][0]
    rule.refresh_from_db()
    assert rule.action_config == [{"type": "stop_machine", "machine_id": "M-123"}]


def test_put_replaces_the_rule(operator_client, device, template):
    rule = make_rule(device)
    body = valid_body(device, template, name="Replaced", operator="lt", threshold="3")

    response = operator_client.put(f"{URL}{rule.id}/", body, format="json")

    assert response.status_code == 200, response.content
    rule.refresh_from_db()
    assert (rule.name, rule.operator, str(rule.threshold), len(rule.action_config)) == ("Replaced", "lt", "3.0000", 2)


def test_delete_a_rule_without_events(operator_client, device):
    rule = make_rule(device)

    assert operator_client.delete(f"{URL}{rule.id}/").status_code == 204
    assert not Rule.objects.filter(pk=rule.pk).exists()


def test_a_rule_with_events_is_kept_for_their_history(operator_client, device):
    rule = make_rule(device)
    Event.objects.create(rule=rule, severity="warning", message="m", execution_results=[])

    response = operator_client.delete(f"{URL}{rule.id}/")

    assert response.status_code == 409
    assert "Disable the rule instead" in response.json()["detail"]
    assert Rule.objects.filter(pk=rule.pk).exists() and Event.objects.count() == 1


def test_a_viewer_reads_rules_but_cannot_write_them(viewer_client, device, template):
    rule = make_rule(device)

    assert viewer_client.get(f"{URL}{rule.id}/").status_code == 200
    assert viewer_client.post(URL, valid_body(device, template), format="json").status_code == 403
    assert viewer_client.patch(f"{URL}{rule.id}/", {"name": "x"}, format="json").status_code == 403
    assert viewer_client.delete(f"{URL}{rule.id}/").status_code == 403
    assert Rule.objects.get(pk=rule.pk).name == "High vibration"


def test_anonymous_gets_401(anonymous_client):
    assert anonymous_client.get(URL).status_code == 401

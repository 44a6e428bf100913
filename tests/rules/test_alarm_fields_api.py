"""The alarm options of a rule through `/api/v1/rules/`: defaults that keep the spec's behaviour,
every option stored, and a 400 naming the field for each bad value, with nothing written."""

import pytest

from iothub.notifications.models import NotificationTemplate
from iothub.rules.models import Rule

URL = "/api/v1/rules/"
pytestmark = pytest.mark.django_db


@pytest.fixture
def template(db):
    return NotificationTemplate.objects.create(name="alert", message_template="{message}", recipients=[])


@pytest.fixture
def second_template(db):
    return NotificationTemplate.objects.create(name="escalate", message_template="{message}", recipients=[])


def body(device, template, **changes) -> dict:
    data = {
        "device": str(device.id),
        "name": "High vibration",
        "operator": "gt",
        "threshold": "15",
        "action_config": [{"type": "notification", "template_id": template.id, "recipients": ["ops@example.com"]}],
    }
    data.update(changes)
    return data


def test_a_rule_without_the_options_keeps_the_spec_behaviour(operator_client, device, template):
    response = operator_client.post(URL, body(device, template), format="json")

    assert response.status_code == 201, response.content
    got = response.json()
    assert {k: got[k] for k in ("duration_seconds", "clear_threshold", "clear_duration_seconds")} == {
        "duration_seconds": 0,
        "clear_threshold": None,
        "clear_duration_seconds": 0,
    }
    assert (got["auto_resolve"], got["dedupe_while_open"]) == (False, False)
    assert (got["reminder_minutes"], got["reminder_limit"], got["escalation"]) == (None, None, None)
    assert got["state"] == {"phase": "ok", "since": None, "last_reading_at": None, "open_event": None}


def test_every_option_is_stored(operator_client, device, template, second_template):
    options = {
        "duration_seconds": 60,
        "clear_threshold": "12.5",
        "clear_duration_seconds": 30,
        "auto_resolve": True,
        "dedupe_while_open": True,
        "reminder_minutes": 10,
        "reminder_limit": 3,
        "escalation": {"after_minutes": 30, "template_id": second_template.id},
    }
    response = operator_client.post(URL, body(device, template, **options), format="json")

    assert response.status_code == 201, response.content
    got = response.json()
    assert {k: got[k] for k in options} == {**options, "clear_threshold": "12.5000"}
    rule = Rule.objects.get(pk=got["id"])
    assert (rule.duration_seconds, rule.auto_resolve, rule.escalation["template_id"]) == (60, True, second_template.id)


def test_a_nodata_rule_needs_no_threshold_but_a_duration(operator_client, device, template):
    without_duration = body(device, template, operator="nodata")
    del without_duration["threshold"]
    refused = operator_client.post(URL, without_duration, format="json")
    created = operator_client.post(URL, {**without_duration, "duration_seconds": 300}, format="json")

    assert refused.status_code == 400
    assert "duration_seconds" in refused.json()
    assert created.status_code == 201, created.content
    assert created.json()["operator"] == "nodata"


def test_a_missing_threshold_is_named_for_a_comparison_rule(operator_client, device, template):
    data = body(device, template)
    del data["threshold"]

    response = operator_client.post(URL, data, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"threshold"}


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"duration_seconds": -1}, "duration_seconds", "greater than or equal to 0"),
        ({"duration_seconds": "soon"}, "duration_seconds", "valid integer"),
        ({"clear_duration_seconds": 10**9}, "clear_duration_seconds", "less than or equal"),
        ({"clear_threshold": "16"}, "clear_threshold", "must not be above threshold"),
        ({"operator": "lt", "clear_threshold": "14"}, "clear_threshold", "must not be below threshold"),
        ({"operator": "eq", "clear_threshold": "14"}, "clear_threshold", "applies only to gt, gte, lt and lte"),
        ({"auto_resolve": "maybe"}, "auto_resolve", "valid boolean"),
        ({"dedupe_while_open": 3}, "dedupe_while_open", "valid boolean"),
        ({"reminder_minutes": 0}, "reminder_minutes", "greater than or equal to 1"),
        ({"reminder_limit": 2}, "reminder_limit", "needs reminder_minutes"),
        ({"reminder_minutes": 5, "reminder_limit": 0}, "reminder_limit", "greater than or equal to 1"),
        ({"escalation": {"after_minutes": 5}}, "escalation", "template_id: is required"),
        ({"escalation": {"after_minutes": 0, "template_id": 1}}, "escalation", "after_minutes: must be between"),
        ({"escalation": {"after_minutes": 5, "template_id": 999999}}, "escalation", "template_id"),
        ({"escalation": {"after_minutes": 5, "template_id": 1, "to": "x"}}, "escalation", "to: unknown key"),
        ({"escalation": [5]}, "escalation", "must be an object"),
        ({"operator": "nodata", "duration_seconds": 0}, "duration_seconds", "a nodata rule needs it"),
        ({"operator": "sometimes"}, "operator", "not a valid choice"),
    ],
)
def test_a_bad_option_is_a_400_naming_the_field_and_writes_nothing(
    operator_client, device, template, changes, field, fragment
):
    response = operator_client.post(URL, body(device, template, **changes), format="json")

    assert response.status_code == 400, response.content
    messages = response.json()[field]
    assert any(fragment in m for m in messages), messages
    assert Rule.objects.count() == 0


def test_reminders_need_a_notification_action(operator_client, device, template):
    data = body(device, template, reminder_minutes=5, action_config=[{"type": "stop_machine", "machine_id": "M-1"}])

    response = operator_client.post(URL, data, format="json")

    assert response.status_code == 400
    assert response.json()["reminder_minutes"] == ["the rule has no notification action to send again"]


def test_patch_changes_one_option_and_keeps_the_others(operator_client, device, template):
    created = operator_client.post(URL, body(device, template, duration_seconds=60), format="json").json()

    response = operator_client.patch(f"{URL}{created['id']}/", {"auto_resolve": True}, format="json")
    refused = operator_client.patch(f"{URL}{created['id']}/", {"clear_threshold": "99"}, format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["duration_seconds"], response.json()["auto_resolve"]) == (60, True)
    assert refused.status_code == 400
    assert "clear_threshold" in refused.json()
    assert Rule.objects.get(pk=created["id"]).clear_threshold is None

"""The templates API: CRUD, validation naming the field (with nothing written), roles, preview."""

import pytest

from iothub.notifications.models import NotificationTemplate

URL = "/api/v1/notification-templates/"

VALID = {
    "name": "Vibration alarm",
    "message_template": "{severity}: {device_name} reads {metric} {value} {unit} (limit {threshold})",
    "recipients": [
        {"type": "email", "address": "ops@plant.example", "name": "Operations"},
        {"type": "sms", "phone": "+380501234567"},
        {"type": "webhook", "url": "https://hooks.example.com/iothub"},
    ],
    "priority": 2,
    "retry_count": 4,
    "retry_delay_minutes": 10,
}


def test_operator_creates_a_template(operator_client):
    response = operator_client.post(URL, VALID, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["recipients"] == VALID["recipients"]
    assert (body["priority"], body["retry_count"], body["retry_delay_minutes"], body["is_active"]) == (2, 4, 10, True)
    stored = NotificationTemplate.objects.get(id=body["id"])
    assert stored.message_template == VALID["message_template"]


def test_defaults_are_the_specs(operator_client):
    response = operator_client.post(
        URL, {"name": "minimal", "message_template": "{rule_name}", "recipients": []}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["priority"], body["retry_count"], body["retry_delay_minutes"], body["is_active"]) == (1, 3, 5, True)


def test_nulls_written_directly_read_as_the_defaults(operator_client):
    template = NotificationTemplate.objects.create(
        name="sql", message_template="x", recipients=[], priority=None, retry_count=None, retry_delay_minutes=None
    )
    template.is_active = None
    template.save()
    body = operator_client.get(f"{URL}{template.id}/").json()
    assert (body["priority"], body["retry_count"], body["retry_delay_minutes"], body["is_active"]) == (1, 3, 5, True)


def test_viewer_reads_but_cannot_write(viewer_client, operator_client):
    created = operator_client.post(URL, VALID, format="json").json()
    assert viewer_client.get(URL).json()["results"][0]["id"] == created["id"]
    assert viewer_client.post(URL, dict(VALID, name="other"), format="json").status_code == 403
    assert viewer_client.patch(f"{URL}{created['id']}/", {"priority": 3}, format="json").status_code == 403
    assert viewer_client.delete(f"{URL}{created['id']}/").status_code == 403


def test_anonymous_is_refused(anonymous_client, db):
    assert anonymous_client.get(URL).status_code == 401


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"name": ""}, "name", "blank"),
        ({"name": "n" * 101}, "name", "100 characters"),
        ({"message_template": ""}, "message_template", "blank"),
        ({"message_template": "   "}, "message_template", "blank"),
        ({"message_template": "{nope}"}, "message_template", "unknown placeholder"),
        ({"message_template": "{device_name.__class__}"}, "message_template", "attribute and index access"),
        ({"message_template": "{value:>9999}"}, "message_template", "format specs"),
        ({"message_template": "{device_name"}, "message_template", "Unbalanced braces"),
        ({"recipients": "ops@plant.example"}, "recipients", "must be a list"),
        ({"recipients": ["ops@plant.example"]}, "recipients", "must be an object"),
        ({"recipients": [{"type": "pager", "number": "1"}]}, "recipients", "[0].type"),
        ({"recipients": [{"type": "email", "address": "x@y.co", "extra": 1}]}, "recipients", "unknown key(s) extra"),
        ({"recipients": [{"type": "email", "address": "nope"}]}, "recipients", "[0].address"),
        ({"recipients": [{"type": "sms", "phone": "0501234567"}]}, "recipients", "[0].phone"),
        ({"recipients": [{"type": "webhook", "url": "not a url"}]}, "recipients", "[0].url"),
        ({"recipients": [{"type": "webhook", "url": "http://192.168.0.10/x"}]}, "recipients", "private"),
        ({"priority": -1}, "priority", "greater than or equal to 0"),
        ({"priority": 11}, "priority", "less than or equal to 10"),
        ({"priority": None}, "priority", "null"),
        ({"retry_count": -1}, "retry_count", "greater than or equal to 0"),
        ({"retry_count": 11}, "retry_count", "less than or equal to 10"),
        ({"retry_delay_minutes": -1}, "retry_delay_minutes", "greater than or equal to 0"),
        ({"retry_delay_minutes": 1441}, "retry_delay_minutes", "less than or equal to 1440"),
        ({"is_active": "maybe"}, "is_active", "valid boolean"),
    ],
)
def test_invalid_templates_are_refused_naming_the_field_and_nothing_is_written(operator_client, change, field, says):
    response = operator_client.post(URL, {**VALID, **change}, format="json")
    assert response.status_code == 400
    errors = response.json()
    assert list(errors) == [field], errors
    assert says in " ".join(errors[field]), errors
    assert not NotificationTemplate.objects.exists()


def test_missing_fields_are_named(operator_client):
    response = operator_client.post(URL, {}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"name", "message_template", "recipients"}
    assert not NotificationTemplate.objects.exists()


def test_duplicate_name_is_refused(operator_client):
    operator_client.post(URL, VALID, format="json")
    response = operator_client.post(URL, VALID, format="json")
    assert response.status_code == 400
    assert "name" in response.json()
    assert NotificationTemplate.objects.count() == 1


def test_private_webhook_is_accepted_at_save_when_allowed(operator_client, settings):
    settings.IOTHUB_WEBHOOK_ALLOW_PRIVATE = True
    response = operator_client.post(
        URL, dict(VALID, recipients=[{"type": "webhook", "url": "http://127.0.0.1:8300/hook"}]), format="json"
    )
    assert response.status_code == 201, response.json()


def test_invalid_update_changes_nothing(operator_client):
    created = operator_client.post(URL, VALID, format="json").json()
    response = operator_client.patch(f"{URL}{created['id']}/", {"message_template": "{bad}"}, format="json")
    assert response.status_code == 400
    assert NotificationTemplate.objects.get(id=created["id"]).message_template == VALID["message_template"]


def test_partial_update(operator_client):
    created = operator_client.post(URL, VALID, format="json").json()
    response = operator_client.patch(f"{URL}{created['id']}/", {"priority": 0, "is_active": False}, format="json")
    assert response.status_code == 200, response.json()
    stored = NotificationTemplate.objects.get(id=created["id"])
    assert (stored.priority, stored.is_active, stored.retry_count) == (0, False, 4)


def test_delete_unused_template(operator_client):
    created = operator_client.post(URL, VALID, format="json").json()
    assert operator_client.delete(f"{URL}{created['id']}/").status_code == 204
    assert not NotificationTemplate.objects.exists()


def test_delete_refused_while_a_rule_uses_the_template(operator_client, template_factory, event_factory):
    template = template_factory()
    event_factory(template, enqueue=False)
    response = operator_client.delete(f"{URL}{template.id}/")
    assert response.status_code == 409
    assert "Vibration too high" in response.json()["detail"]
    assert NotificationTemplate.objects.filter(id=template.id).exists()


def test_delete_refused_while_deliveries_keep_the_template(operator_client, template_factory, event_factory):
    template = template_factory(recipients=[{"type": "email", "address": "ops@plant.example"}])
    event = event_factory(template)
    event.rule.action_config = []
    event.rule.save()
    response = operator_client.delete(f"{URL}{template.id}/")
    assert response.status_code == 409
    assert "1 notification delivery" in response.json()["detail"]


def test_preview_with_the_sample_event(viewer_client, template_factory):
    template = template_factory(message_template="{severity} {device_name}: {metric} {operator} {threshold}")
    response = viewer_client.get(f"{URL}{template.id}/preview/")
    assert response.status_code == 200
    body = response.json()
    assert body["event_id"] is None
    assert body["rendered"] == "critical Press 3: vibration > 25"


def test_preview_with_a_real_event(viewer_client, template_factory, event_factory, settings):
    settings.IOTHUB_PUBLIC_URL = "https://hub.plant.example"
    template = template_factory(
        message_template="{device_name} ({serial_number}, {location}, {device_type}) {metric}={value}{unit} "
        "{operator} {threshold}; {rule_name}; {severity}; #{event_id} {event_url}"
    )
    event = event_factory(template, value=31.5, enqueue=False)
    response = viewer_client.get(f"{URL}{template.id}/preview/", {"event": event.id})
    assert response.status_code == 200
    assert response.json()["rendered"] == (
        "Press 3 (VIB-SN-001, Workshop A, vibration_sensor) vibration=31.5mm_s > 25; Vibration too high; "
        f"critical; #{event.id} https://hub.plant.example/api/v1/events/{event.id}/"
    )
    assert response.json()["context"]["timestamp"].endswith("Z")


def test_preview_of_an_unknown_event_names_the_parameter(viewer_client, template_factory):
    template = template_factory()
    response = viewer_client.get(f"{URL}{template.id}/preview/", {"event": 999999})
    assert response.status_code == 400
    assert "event" in response.json()

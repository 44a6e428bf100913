"""Templates and deliveries in the admin: the template form refuses what the API refuses, and the
deliveries list renders for a superuser without offering edits."""

import pytest

from iothub.notifications.admin import NotificationTemplateForm
from iothub.notifications.models import NotificationDelivery, NotificationTemplate


def form(**overrides):
    data = {
        "name": "Night shift",
        "message_template": "{severity}: {rule_name} on {device_name}",
        "recipients": '[{"type": "email", "address": "ops@example.com"}]',
        "priority": 1,
        "retry_count": 3,
        "retry_delay_minutes": 5,
        "is_active": True,
    }
    data.update(overrides)
    return NotificationTemplateForm(data=data)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"message_template": "{device_name.__class__}"}, "message_template"),
        ({"message_template": "{unknown_placeholder}"}, "message_template"),
        ({"recipients": '[{"type": "sms", "phone": "0501234567"}]'}, "recipients"),
        ({"recipients": '[{"type": "webhook", "url": "http://127.0.0.1/hook"}]'}, "recipients"),
        ({"priority": 11}, "priority"),
        ({"retry_count": -1}, "retry_count"),
        ({"retry_delay_minutes": 100000}, "retry_delay_minutes"),
    ],
)
def test_the_template_form_refuses_what_the_api_refuses(overrides, field):
    bound = form(**overrides)
    assert not bound.is_valid()
    assert field in bound.errors
    assert NotificationTemplate.objects.count() == 0


@pytest.mark.django_db
def test_the_template_form_stores_recipients_as_the_api_does():
    bound = form(recipients='[{"type": "sms", "phone": "+380 50 123-45-67"}]')
    assert bound.is_valid(), bound.errors
    assert bound.save().recipients == [{"type": "sms", "phone": "+380501234567"}]


@pytest.mark.django_db
def test_the_deliveries_list_renders_and_offers_no_edit(client, admin_user, template_factory, event_factory):
    event = event_factory(template_factory(recipients=[{"type": "email", "address": "ops@example.com"}]))
    delivery = NotificationDelivery.objects.get(event=event)
    client.force_login(admin_user)

    listing = client.get("/admin/notifications/notificationdelivery/")
    assert listing.status_code == 200
    assert b"ops@example.com" in listing.content
    detail = client.get(f"/admin/notifications/notificationdelivery/{delivery.id}/change/")
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content  # read-only: no save button
    assert client.get("/admin/notifications/notificationdelivery/add/").status_code == 403

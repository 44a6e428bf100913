"""A PATCH racing a DELETE of the same row answers 404 (the row is gone), never 500.

The race is made deterministic with a real row lock: this test's connection locks the row, the
PATCH (served in another thread, on its own connection) reads the row and then waits for the lock
in its UPDATE; the row is deleted and the lock released; the UPDATE then finds no row.
"""

import threading

import pytest
from django.db import connection, transaction

from iothub.devices.services import device_create, device_type_create
from iothub.notifications.services import notification_template_create
from tests.locks import wait_until_a_transaction_waits_for_ours
from tests.rules.helpers import make_rule


def _template(device):
    return notification_template_create(name="Shift lead", message_template="{rule_name}", recipients=[])


def _device_type(device):
    return device_type_create(name="pressure_sensor", metric_name="pressure", metric_unit="bar")


def _device(device):
    return device_create(device_type=device.device_type, name="Press 4", serial_number="SN-4", location="A").device


def _rule(device):
    return make_rule(device)


RESOURCES = {
    # path, the table, how to make a row, a valid change
    "notification-templates": ("notification_templates", _template, {"priority": 3}),
    "device-types": ("device_types", _device_type, {"description": "changed"}),
    "devices": ("devices", _device, {"location": "Workshop B"}),
    "rules": ("rules", _rule, {"description": "changed"}),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("resource", RESOURCES)
def test_a_patch_racing_a_delete_answers_404(operator_client, resource):
    table, make, change = RESOURCES[resource]
    kind = device_type_create(name="vibration_sensor", metric_name="vibration", metric_unit="mm_s")
    device = device_create(device_type=kind, name="Press 3", serial_number="VIB-SN-001", location="A").device
    row = make(device)
    answer = {}

    def patch():
        operator_client.raise_request_exception = False  # a 500 is an answer to assert on
        try:
            answer["response"] = operator_client.patch(f"/api/v1/{resource}/{row.pk}/", change, format="json")
        finally:
            connection.close()

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE", [row.pk])  # noqa: S608
        thread = threading.Thread(target=patch)
        thread.start()
        wait_until_a_transaction_waits_for_ours()
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE id = %s", [row.pk])  # noqa: S608
    thread.join(timeout=30)

    response = answer["response"]
    assert response.status_code == 404, response.content
    assert "detail" in response.json()

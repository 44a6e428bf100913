"""What the API accepts as a request body: JSON only, within bounds that keep every refusal a 400.

Python's JSON parser recurses per level of nesting and refuses to convert integers of more than
4,300 digits; the validators and the database adapter that a parsed body reaches recurse too. The
API's parser refuses what would otherwise surface as a 500.
"""

import json

import pytest

from iothub.devices.models import DeviceType
from iothub.notifications.models import NotificationTemplate

pytestmark = pytest.mark.django_db

DEVICE_TYPES = "/api/v1/device-types/"
TEMPLATES = "/api/v1/notification-templates/"


def post_raw(client, url, raw: str, content_type="application/json"):
    return client.post(url, data=raw, content_type=content_type)


@pytest.mark.parametrize("url", [DEVICE_TYPES, TEMPLATES, "/api/v1/rules/", "/api/v1/devices/"])
def test_json_nested_deeper_than_the_parser_goes_is_a_400(operator_client, url):
    response = post_raw(operator_client, url, "[" * 100_000 + "]" * 100_000)

    assert response.status_code == 400, response.content
    assert "nested" in response.json()["detail"]


def test_json_nested_deeper_than_the_limit_inside_a_json_field_is_a_400(operator_client):
    # Parses (Python goes a few thousand levels deep), but no recipient list is 40 levels deep,
    # and validators, error messages and the database adapter would recurse through it.
    body = {"name": "deep", "message_template": "{rule_name}", "recipients": json.loads("[" * 40 + "]" * 40)}

    response = post_raw(operator_client, TEMPLATES, json.dumps(body))

    assert response.status_code == 400, response.content
    assert "nested more than 32 levels" in response.json()["detail"]
    assert not NotificationTemplate.objects.exists()


def test_an_integer_with_thousands_of_digits_is_a_400(operator_client):
    raw = '{"name": "t", "metric_name": "vibration", "metric_unit": "mm_s", "metric_min": ' + "9" * 5000 + "}"

    response = post_raw(operator_client, DEVICE_TYPES, raw)

    assert response.status_code == 400, response.content
    assert "digits" in response.json()["detail"]
    assert len(response.content) < 1000
    assert not DeviceType.objects.exists()


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("application/x-www-form-urlencoded", "name=t&metric_name=vibration&metric_unit=mm_s"),
        (
            "multipart/form-data; boundary=XYZ",
            '--XYZ\r\nContent-Disposition: form-data; name="name"\r\n\r\nt\r\n--XYZ--\r\n',
        ),
    ],
)
def test_form_encodings_are_refused_with_415(operator_client, content_type, raw):
    response = post_raw(operator_client, DEVICE_TYPES, raw, content_type=content_type)

    assert response.status_code == 415, response.content
    assert "detail" in response.json()
    assert not DeviceType.objects.exists()

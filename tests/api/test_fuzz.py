"""The API against its own schema: a bounded schemathesis run over `docs/api.yaml`.

Every operation is called with generated requests, valid and invalid, against the hub served over
HTTP on loopback: the user API as an administrator and ingest as a device (so that the run reaches
past 401), with seeded rows that path, query and body parameters often name (so that it reaches
past 404 and "no such device"). The run passes when no answer is a 5xx and every answer is one the
schema documents, in the documented content type and shape. docs/api.md ("Fuzzing against the
schema") says how to run it by hand, with more cases or another seed.

Left out of the run: the checks `positive_data_acceptance` and `negative_data_rejection`. The schema
cannot express the
  API's semantic rules (a row must exist, a name be unique, `metric_min <= metric_max`, a template's
  placeholders known), and DRF reads pagination and ordering leniently (an unknown `ordering` field
  is ignored), so a request can conform and be refused, or not conform and be served.
"""

import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from iothub.devices.models import DeviceType
from iothub.devices.services import DeviceWithToken, device_create, device_type_create
from iothub.events.models import Event
from iothub.notifications.models import NotificationDelivery
from iothub.notifications.services import notification_template_create
from tests.rules.helpers import make_rule, message, send

API_YAML = Path(__file__).resolve().parents[2] / "docs" / "api.yaml"
# A fixed seed, so that runs send nearly the same requests (two workers share the hub, so the order,
# and the rows a request finds, vary). Run other seeds by hand to look further (docs/api.md).
SEED = 20261128
MAX_EXAMPLES = 50
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",
    "use_after_free",
    "unsupported_method",
]
# Which seeded rows each parameter may name, and how often a generated request does.
BINDINGS = [
    (r"^/api/v1/device-types/\{id\}/", {"path.id": "device-types"}),
    (r"^/api/v1/devices/\{id\}/", {"path.id": "devices"}),
    (r"^/api/v1/devices/\{device_id\}/", {"path.device_id": "devices"}),
    (r"^/api/v1/devices/$", {"query.device_type": "device-types", "body.device_type": "device-types"}),
    (r"^/api/v1/devices/\{id\}/$", {"body.device_type": "device-types"}),
    (r"^/api/v1/rules/\{id\}/", {"path.id": "rules"}),
    (r"^/api/v1/rules/", {"query.device": "devices", "body.device": "devices"}),
    (r"^/api/v1/rules/", {"body.action_config[*].template_id": "templates"}),
    (r"^/api/v1/events/\{id\}/", {"path.id": "events"}),
    (r"^/api/v1/events/$", {"query.device": "devices", "query.rule": "rules"}),
    (r"^/api/v1/notification-templates/\{id\}/", {"path.id": "templates", "query.event": "events"}),
    (r"^/api/v1/notification-deliveries/\{id\}/", {"path.id": "deliveries"}),
    (r"^/api/v1/notification-deliveries/$", {"query.event": "events", "query.template": "templates"}),
]
PROBABILITY = 0.7


def _seed() -> tuple[dict[str, list], DeviceWithToken]:
    """Rows for the run to find: types, devices with readings, templates, rules, the events a rule
    raised through ingest and their deliveries (one failed, for `retry`); and the device that sends
    the run's telemetry, which no other operation is pointed at (so that it is never deleted)."""
    kinds = [
        device_type_create(name="vibration_sensor", metric_name="vibration", metric_unit="mm_s"),
        device_type_create(name="pressure_sensor", metric_name="pressure", metric_unit="bar"),
    ]
    created = [
        device_create(device_type=kinds[0], name=f"Press {n}", serial_number=f"VIB-SN-{n:03}", location="Workshop A")
        for n in range(1, 4)
    ]
    templates = [
        notification_template_create(
            name=f"Shift {n}",
            message_template="{rule_name}: {value}",
            recipients=[{"type": "email", "address": "a@b.co"}],
        )
        for n in range(1, 3)
    ]
    device = created[0].device
    rule = make_rule(
        device,
        threshold="15",
        cooldown_minutes=0,
        action_config=[{"type": "notification", "template_id": templates[0].id}],
    )
    quiet = make_rule(created[1].device, name="Quiet", threshold="1000")
    client = Client()
    start = timezone.now() - timedelta(hours=2)
    for made in created:
        batch = [message(made.device, at=start + timedelta(minutes=m), vibration=4.0 + m % 5) for m in range(30)]
        send(client, made.token, batch)
    send(client, created[0].token, [message(device, vibration=16.2), message(device, vibration=17.5)])
    NotificationDelivery.objects.filter(id=NotificationDelivery.objects.order_by("id").first().id).update(
        status="failed", error_message="receiver answered 500"
    )
    sender = device_create(device_type=kinds[0], name="Fuzzer", serial_number="FUZZ-SN-001", location="Lab")
    return {
        "device-types": [str(k.id) for k in kinds],
        "devices": [str(c.device.id) for c in created],
        "templates": [t.id for t in templates],
        "rules": [str(rule.id), str(quiet.id)],
        "events": list(Event.objects.values_list("id", flat=True)),
        "deliveries": list(NotificationDelivery.objects.values_list("id", flat=True)),
        "serial-numbers": [sender.device.serial_number],
    }, sender


def _toml_value(value) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def _config(seeded: dict[str, list], *, user_token: str, device_token: str) -> str:
    lines = [f'headers = {{ Authorization = "Token {user_token}" }}', ""]
    for name, values in seeded.items():
        assert values, f"nothing seeded for {name}"
        lines += [f"[dictionaries.{name}]", f"values = [{', '.join(_toml_value(v) for v in values)}]", ""]
    for regex, parameters in BINDINGS:
        bound = ", ".join(
            f'"{key}" = {{ dictionary = "{name}", probability = {PROBABILITY} }}' for key, name in parameters.items()
        )
        lines += ["[[operations]]", f"include-path-regex = '{regex}'", f"parameters = {{ {bound} }}", ""]
    lines += [
        "[[operations]]",
        'include-operation-id = "telemetry_ingest"',
        f'headers = {{ Authorization = "Bearer {device_token}" }}',
        f'parameters = {{ "body.serial_number" = {{ dictionary = "serial-numbers", probability = {PROBABILITY} }} }}',
        "",
    ]
    return "\n".join(lines)


@pytest.mark.django_db(transaction=True)
def test_every_answer_of_the_api_to_fuzzed_requests_is_documented_and_none_is_a_5xx(live_server, tmp_path):
    seeded, sender = _seed()
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(seeded, user_token=_admin_token(), device_token=sender.token))
    command = [
        str(Path(sys.executable).parent / "st"),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        str(API_YAML),
        "--url",
        live_server.url,
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "2",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    # In a folder of its own: schemathesis keeps a cache in its working directory.
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path)

    # What ran, and how long each phase took, for the test's output (pytest -s, or a failure).
    print("\n".join(line for line in result.stdout.splitlines() if "(in " in line or "generated" in line))
    assert result.returncode == 0, result.stdout[-30_000:] + result.stderr[-5_000:]
    selected = re.search(r"Selected: (\d+)/", result.stdout)
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert selected and tested and selected[1] == tested[1], result.stdout[-5_000:]
    assert int(tested[1]) >= 40, "fewer operations than the API has: is the schema whole?"
    # The run got past authentication and validation: it created rows.
    assert DeviceType.objects.count() > len(seeded["device-types"])


def _admin_token() -> str:
    user = User.objects.create_superuser("fuzzer", "fuzzer@example.com", "pw-fuzzer")
    return Token.objects.create(user=user).key

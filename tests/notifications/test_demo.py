"""The demo's alerting: `load_demo --alerts` and the demo receivers."""

import io
import json
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from django.core import mail
from django.core.management import call_command
from standardwebhooks import Webhook

from iothub.notifications.models import NotificationTemplate
from iothub.rules.models import Rule

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.django_db
def test_load_demo_with_alerts_creates_the_template_and_the_rule_once():
    out = io.StringIO()
    call_command("load_demo", "--alerts", "http://127.0.0.1:9000/hooks", stdout=out)
    call_command("load_demo", "--alerts", "http://127.0.0.1:9000/hooks", stdout=out)

    template = NotificationTemplate.objects.get()
    rule = Rule.objects.get()
    assert [r["type"] for r in template.recipients] == ["email", "webhook"]
    assert template.recipients[1]["url"] == "http://127.0.0.1:9000/hooks"
    assert (rule.name, rule.operator, str(rule.threshold), rule.device.serial_number) == (
        "High vibration",
        "gt",
        "15.0000",
        "VIB-SN-001",
    )
    assert rule.action_config == [{"type": "notification", "template_id": template.id}]
    assert out.getvalue().count("created") == 4 and out.getvalue().count("present") == 4


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def receivers():
    smtp_port, webhook_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "demo_receivers",
            "--smtp-port",
            str(smtp_port),
            "--webhook-port",
            str(webhook_port),
        ],
        cwd=ROOT,
        env={**__import__("os").environ, "IOTHUB_WEBHOOK_SECRET": SECRET, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", webhook_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    yield smtp_port, webhook_port, process
    process.terminate()
    process.wait(10)


def test_the_receivers_print_an_email_and_a_verified_webhook_and_refuse_a_forged_one(receivers, settings):
    smtp_port, webhook_port, process = receivers
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_port
    mail.send_mail("Alarm", "Vibration 16.2 mm_s > 15", "hub@example.com", ["ops@example.com"])

    body = json.dumps({"type": "event.raised", "data": {"event": {"id": 7}}})
    signed = Webhook(SECRET).sign("ntf_7_1", datetime.now(UTC), body)
    headers = {"webhook-id": "ntf_7_1", "webhook-timestamp": str(int(time.time())), "webhook-signature": signed}
    assert httpx.post(f"http://127.0.0.1:{webhook_port}/hooks", content=body, headers=headers).status_code == 204
    forged = {**headers, "webhook-id": "ntf_7_2"}  # the signature covers the id
    assert httpx.post(f"http://127.0.0.1:{webhook_port}/hooks", content=body, headers=forged).status_code == 204

    process.terminate()
    output = process.communicate(timeout=10)[0]
    assert "email to ops@example.com: Alarm" in output
    assert "Vibration 16.2 mm_s > 15" in output
    assert "webhook /hooks id ntf_7_1: signature verified" in output
    assert "webhook /hooks id ntf_7_2: SIGNATURE REFUSED" in output

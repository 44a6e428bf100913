"""Fixtures of the notification tests: the loopback servers, settings pointing at them, and
templates, rules and events to notify about."""

import base64
import time
from decimal import Decimal

import pytest
from django.utils import timezone

from iothub.events.models import Event
from iothub.events.services import event_raise
from iothub.notifications.delivery import DeliveryOutbox
from iothub.notifications.models import DeliveryStatus, NotificationDelivery, NotificationTemplate
from iothub.notifications.services import notification_deliveries_enqueue, notification_template_create
from iothub.rules.models import Rule
from iothub.telemetry.models import Telemetry
from iothub.telemetry.services import StoredReading
from tests.notifications.servers import SmsGateway, SmtpServer, WebhookReceiver
from tests.worker.drive import running_worker

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"tests-only-webhook-signing-key!!").decode()


@pytest.fixture
def webhook_receiver(settings):
    settings.IOTHUB_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.IOTHUB_WEBHOOK_ALLOW_PRIVATE = True
    receiver = WebhookReceiver(WEBHOOK_SECRET).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def sms_gateway(settings):
    gateway = SmsGateway(account_sid="AC" + "0" * 32, auth_token="tests-auth-token").start()
    settings.IOTHUB_SMS_PROVIDER = "twilio"
    settings.IOTHUB_SMS_API_URL = gateway.base_url
    settings.IOTHUB_SMS_ACCOUNT_SID = gateway.account_sid
    settings.IOTHUB_SMS_AUTH_TOKEN = gateway.auth_token
    settings.IOTHUB_SMS_FROM = "+15005550006"
    yield gateway
    gateway.stop()


@pytest.fixture
def smtp_server(settings):
    server = SmtpServer().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = server.port
    settings.EMAIL_USE_TLS = False
    settings.DEFAULT_FROM_EMAIL = "IoT Hub <hub@plant.example>"
    yield server
    server.stop()


@pytest.fixture
def fast_retries(settings):
    """retry_delay_minutes counts in seconds, so retries happen within a test."""
    settings.IOTHUB_NOTIFICATION_RETRY_UNIT_SECONDS = 1


@pytest.fixture
def template_factory(db):
    counter = iter(range(1, 10_000))

    def make(**overrides) -> NotificationTemplate:
        values = {
            "name": f"template {next(counter)}",
            "message_template": "{severity}: {rule_name} on {device_name} ({serial_number}): {metric} {value} {unit}",
            "recipients": [],
        }
        values.update(overrides)
        return notification_template_create(**values)

    return make


@pytest.fixture
def event_factory(device):
    """An event raised as ingest raises it: a `gt 25` vibration rule on the fixture device, with one
    notification action per given template, a stored reading of `value`, `event_raise`, and
    (unless told not to) each action's deliveries enqueued."""

    def make(*templates: NotificationTemplate, recipients=None, value=30.2, enqueue=True) -> Event:
        actions = [{"type": "notification", "template_id": t.id, "recipients": recipients or []} for t in templates]
        rule = Rule.objects.create(
            device=device,
            name="Vibration too high",
            operator="gt",
            threshold=Decimal("25"),
            action_config=actions,
            severity="critical",
        )
        payload = {"version": "0.0.1", "serial_number": device.serial_number, "metrics": {"vibration": value}}
        row = Telemetry.objects.create(device=device, timestamp=timezone.now(), payload=payload)
        reading = StoredReading(id=row.id, timestamp=row.timestamp, payload=payload)
        event = event_raise(rule=rule, device=device, reading=reading, metric="vibration", value=Decimal(str(value)))
        if enqueue:
            for index, (action, entry) in enumerate(zip(actions, event.execution_results, strict=True)):
                assert entry["status"] == "pending", entry  # refused when raised: the test's setup is wrong
                notification_deliveries_enqueue(event=event, action_index=index, action=action)
        return event

    return make


def deliver_until_settled(*, timeout: float = 15.0, on_pass=None) -> None:
    """Run the worker (its loop, on a thread) until no delivery is pending, calling `on_pass`
    every few milliseconds meanwhile."""
    deadline = time.monotonic() + timeout
    with running_worker([DeliveryOutbox()]):
        while time.monotonic() < deadline:
            # Settled first, then `on_pass`: its last call sees the final state.
            settled = not NotificationDelivery.objects.filter(status=DeliveryStatus.PENDING).exists()
            if on_pass:
                on_pass()
            if settled:
                return
            time.sleep(0.01)
    raise AssertionError("deliveries still pending after the timeout")

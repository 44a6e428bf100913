"""Each channel against a real server on loopback: what arrives, and how failures are recorded.
The worker's engine sends (on connections of its own): the tests commit."""

import asyncio
import socket

import pytest
from standardwebhooks import Webhook

from iothub.events.models import Event
from iothub.notifications.channels.webhook import AddressRefused, _check_literal, _GuardedResolver
from iothub.notifications.delivery import DeliveryOutbox, idempotency_key
from iothub.notifications.models import NotificationDelivery
from tests.notifications.conftest import WEBHOOK_SECRET
from tests.notifications.servers import WebhookReceiver
from tests.worker.drive import send_due

pytestmark = pytest.mark.django_db(transaction=True)


def _only_delivery() -> NotificationDelivery:
    (delivery,) = NotificationDelivery.objects.all()
    return delivery


# ------------------------------------------------------------------------------------------------
# Email
# ------------------------------------------------------------------------------------------------


def test_email_arrives_rendered_at_the_smtp_server(smtp_server, template_factory, event_factory):
    template = template_factory(
        message_template="{severity}: {rule_name} on {device_name}\n\n{metric} is {value} {unit}, limit {threshold}.",
        recipients=[{"type": "email", "address": "ops@plant.example", "name": "Operations"}],
    )
    event_factory(template)
    assert send_due(DeliveryOutbox()) == 1

    (envelope_from, envelope_to, message) = smtp_server.inbox[0]
    assert envelope_to == ["ops@plant.example"]
    assert envelope_from == "hub@plant.example"
    assert message["To"] == "Operations <ops@plant.example>"
    assert message["Subject"] == "critical: Vibration too high on Press 3"
    assert message.get_content().replace("\r\n", "\n").strip() == (
        "critical: Vibration too high on Press 3\n\nvibration is 30.2 mm_s, limit 25."
    )
    delivery = _only_delivery()
    assert message["Message-ID"] == f"<{idempotency_key(delivery)}@plant.example>"
    assert (delivery.status, delivery.attempt_count, delivery.error_message) == ("sent", 1, None)
    assert delivery.sent_at is not None and delivery.last_attempt_at is not None


def test_email_to_an_unreachable_server_keeps_the_error(settings, template_factory, event_factory):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    template = template_factory(recipients=[{"type": "email", "address": "ops@plant.example"}])
    event_factory(template)
    send_due(DeliveryOutbox())
    delivery = _only_delivery()
    assert (delivery.status, delivery.attempt_count, delivery.sent_at) == ("pending", 1, None)
    assert "Connection refused" in delivery.error_message or "ConnectionRefused" in delivery.error_message


# ------------------------------------------------------------------------------------------------
# SMS
# ------------------------------------------------------------------------------------------------


def test_sms_arrives_at_the_gateway_in_twilios_shape(sms_gateway, template_factory, event_factory):
    template = template_factory(
        message_template="{device_name}: {metric} {value}", recipients=[{"type": "sms", "phone": "+380501234567"}]
    )
    event_factory(template)
    send_due(DeliveryOutbox())
    assert sms_gateway.received == [
        {
            "content_type": "application/x-www-form-urlencoded",
            "To": "+380501234567",
            "From": "+15005550006",
            "Body": "Press 3: vibration 30.2",
        }
    ]
    assert _only_delivery().status == "sent"


def test_sms_refused_by_the_gateway_keeps_its_error(settings, sms_gateway, template_factory, event_factory):
    settings.IOTHUB_SMS_AUTH_TOKEN = "wrong"
    template = template_factory(recipients=[{"type": "sms", "phone": "+380501234567"}])
    event_factory(template)
    send_due(DeliveryOutbox())
    delivery = _only_delivery()
    assert delivery.status == "pending"
    assert delivery.error_message == "SMS gateway answered 401: 20003 Authenticate"


def test_sms_without_configuration_fails_at_once(settings, template_factory, event_factory):
    settings.IOTHUB_SMS_ACCOUNT_SID = ""
    template = template_factory(recipients=[{"type": "sms", "phone": "+380501234567"}], retry_count=3)
    event_factory(template)
    send_due(DeliveryOutbox())
    delivery = _only_delivery()
    assert (delivery.status, delivery.attempt_count) == ("failed", 1)
    assert "IOTHUB_SMS_ACCOUNT_SID" in delivery.error_message


# ------------------------------------------------------------------------------------------------
# Webhook
# ------------------------------------------------------------------------------------------------


def test_webhook_is_signed_the_standard_webhooks_way(webhook_receiver, template_factory, event_factory):
    template = template_factory(
        message_template="{device_name} {metric} {value}",
        recipients=[{"type": "webhook", "url": webhook_receiver.url()}],
    )
    event = event_factory(template)
    send_due(DeliveryOutbox())

    (received,) = webhook_receiver.received
    assert received.verified, received.error
    delivery = _only_delivery()
    assert received.headers["webhook-id"] == idempotency_key(delivery)
    assert received.headers["content-type"] == "application/json"
    # Verified again here, independently of the receiver, with the reference library.
    payload = Webhook(WEBHOOK_SECRET).verify(received.body, received.headers)
    assert payload["type"] == "event.raised"
    data = payload["data"]
    assert data["event"]["id"] == event.id
    assert data["event"]["severity"] == "critical"
    assert data["device"]["serial_number"] == "VIB-SN-001"
    assert data["rule"] == {
        "id": str(event.rule_id),
        "name": "Vibration too high",
        "metric": "vibration",
        "operator": "gt",
        "threshold": "25",
    }
    assert data["reading"] == {"metric": "vibration", "value": "30.2", "unit": "mm_s"}
    assert data["notification"]["message"] == "Press 3 vibration 30.2"
    assert data["notification"]["delivery_id"] == delivery.id
    assert delivery.status == "sent"


def test_consecutive_webhooks_reuse_one_connection(webhook_receiver, template_factory, event_factory):
    template = template_factory(
        recipients=[{"type": "webhook", "url": webhook_receiver.url(f"/{n}")} for n in range(5)]
    )
    event_factory(template)
    send_due(DeliveryOutbox(), size=1)  # one at a time: each may reuse the one before's connection
    assert len(webhook_receiver.received) == 5
    assert webhook_receiver.server.connections_accepted == 1


def test_a_wrong_secret_does_not_verify(webhook_receiver, settings, template_factory, event_factory):
    settings.IOTHUB_WEBHOOK_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    template = template_factory(recipients=[{"type": "webhook", "url": webhook_receiver.url()}])
    event_factory(template)
    send_due(DeliveryOutbox())
    assert not webhook_receiver.received[0].verified
    assert _only_delivery().error_message.startswith("receiver answered 401")


def test_webhook_without_a_secret_is_never_sent_unsigned(webhook_receiver, settings, template_factory, event_factory):
    settings.IOTHUB_WEBHOOK_SECRET = ""
    template = template_factory(recipients=[{"type": "webhook", "url": webhook_receiver.url()}])
    event_factory(template)
    send_due(DeliveryOutbox())
    delivery = _only_delivery()
    assert (delivery.status, delivery.attempt_count) == ("failed", 1)
    assert "IOTHUB_WEBHOOK_SECRET" in delivery.error_message
    assert webhook_receiver.received == []


def test_a_redirect_is_a_failure_and_is_not_followed(webhook_receiver, settings, template_factory, event_factory):
    target = WebhookReceiver(WEBHOOK_SECRET).start()
    try:
        webhook_receiver.script.append((307, {"location": target.url()}))
        template = template_factory(recipients=[{"type": "webhook", "url": webhook_receiver.url()}])
        event_factory(template)
        send_due(DeliveryOutbox())
        delivery = _only_delivery()
        assert delivery.status == "pending"
        assert "answered 307" in delivery.error_message and "not followed" in delivery.error_message
        assert len(webhook_receiver.received) == 1
        assert target.received == []
    finally:
        target.stop()


def test_an_error_answer_is_kept_with_an_excerpt(webhook_receiver, template_factory, event_factory):
    webhook_receiver.script.append(503)
    template = template_factory(recipients=[{"type": "webhook", "url": webhook_receiver.url()}])
    event_factory(template)
    send_due(DeliveryOutbox())
    assert _only_delivery().error_message == "receiver answered 503: nope"


def test_a_slow_receiver_times_out(webhook_receiver, settings, template_factory, event_factory):
    settings.IOTHUB_WEBHOOK_TIMEOUT_SECONDS = 1
    webhook_receiver.delay = 2.5
    template = template_factory(recipients=[{"type": "webhook", "url": webhook_receiver.url("/slow")}])
    event_factory(template)
    send_due(DeliveryOutbox())
    assert _only_delivery().error_message == "receiver did not answer within 1 s"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_private_addresses_are_refused_where_the_connection_is_made(
    webhook_receiver, settings, template_factory, event_factory, host
):
    # Saved while private addresses were allowed (or resolving elsewhere): the check at connect
    # time still refuses, whatever the name resolves to now.
    url = webhook_receiver.url().replace("127.0.0.1", host)
    template = template_factory(recipients=[{"type": "webhook", "url": url}], retry_count=3)
    event_factory(template)
    settings.IOTHUB_WEBHOOK_ALLOW_PRIVATE = False
    send_due(DeliveryOutbox())
    delivery = _only_delivery()
    assert (delivery.status, delivery.attempt_count) == ("failed", 1)
    assert "private, loopback or link-local" in delivery.error_message
    assert webhook_receiver.received == []
    entry = Event.objects.get(id=delivery.event_id).execution_results[0]
    assert (entry["status"], entry["sent_count"], entry["failed_count"]) == ("completed", 0, 1)


@pytest.mark.parametrize("address", ["64:ff9b::a9fe:a9fe", "::7f00:1", "::ffff:0:7f00:1", "64:ff9b::a00:1", "fec0::1"])
def test_a_private_ipv4_inside_ipv6_is_refused_before_connecting(settings, address):
    # No database, no server: both guards refuse before a socket is opened (a connection attempt
    # would fail with another error, e.g. the network being unreachable): the address written in the
    # URL, and the same address as the session's resolver hands it to the connector.
    settings.IOTHUB_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(AddressRefused, match="private, loopback or link-local"):
        _check_literal(f"http://[{address}]:80/hooks")

    async def resolve():
        resolver = _GuardedResolver()  # aiohttp's resolver wants a running loop
        try:
            return await resolver.resolve(address, 80, socket.AF_INET6)
        finally:
            await resolver.close()

    with pytest.raises(AddressRefused, match="private, loopback or link-local"):
        asyncio.run(resolve())

"""Delivery channels, one module each (email, SMS, webhook), all with the interface in `base`."""

from collections.abc import Awaitable, Callable

from iothub.notifications.channels import email, sms, webhook
from iothub.notifications.channels.base import DeliveryError, OutgoingMessage
from iothub.notifications.models import RecipientType

# A plain function, or a coroutine function (webhooks), per `base`.
Sender = Callable[[OutgoingMessage], None] | Callable[[OutgoingMessage], Awaitable[None]]

SENDERS: dict[str, Sender] = {
    RecipientType.EMAIL: email.send,
    RecipientType.SMS: sms.send,
    RecipientType.WEBHOOK: webhook.send,
}

__all__ = ["SENDERS", "DeliveryError", "OutgoingMessage", "Sender"]

"""Delivery channels, one module each (email, SMS, webhook), all with the interface in `base`."""

from collections.abc import Callable

from iothub.notifications.channels import email, sms, webhook
from iothub.notifications.channels.base import DeliveryError, OutgoingMessage
from iothub.notifications.models import RecipientType

Sender = Callable[[OutgoingMessage], None]

SENDERS: dict[str, Sender] = {
    RecipientType.EMAIL: email.send,
    RecipientType.SMS: sms.send,
    RecipientType.WEBHOOK: webhook.send,
}

__all__ = ["SENDERS", "DeliveryError", "OutgoingMessage", "Sender"]

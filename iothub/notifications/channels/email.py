"""The email channel: Django's email API, so any backend Django supports works (SMTP by default,
configured by EMAIL_HOST, EMAIL_PORT, EMAIL_USE_TLS, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD)."""

import smtplib
from email.utils import formataddr, parseaddr

from django.conf import settings
from django.core.mail import EmailMessage

from iothub.notifications.channels.base import DeliveryError, OutgoingMessage


def _message_id(key: str) -> str:
    """A Message-ID that stays the same across retries, so a mailbox can drop the duplicate that
    at-least-once delivery may produce."""
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "iothub.localhost"
    return f"<{key}@{domain}>"


def send(message: OutgoingMessage) -> None:
    to = formataddr((message.name, message.address)) if message.name else message.address
    email = EmailMessage(
        subject=message.subject,
        body=message.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers={"Message-ID": _message_id(message.idempotency_key)},
    )
    try:
        accepted = email.send()
    except smtplib.SMTPRecipientsRefused as exc:
        codes = "; ".join(f"{code} {reply.decode(errors='replace')}" for code, reply in exc.recipients.values())
        raise DeliveryError(f"SMTP server refused the recipient: {codes}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP {settings.EMAIL_HOST}:{settings.EMAIL_PORT}: {type(exc).__name__}: {exc}") from None
    if accepted != 1:
        raise DeliveryError("the email backend accepted no message")

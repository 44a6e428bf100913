"""The one interface every channel implements: `send(message)` returns when the message is
accepted, and raises `DeliveryError` (with a message worth keeping in `error_message`) when not."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OutgoingMessage:
    """One delivery, ready to send."""

    delivery_id: int
    # Stable across retries of the same delivery: the webhook-id, the email's Message-ID.
    idempotency_key: str
    address: str
    name: str | None
    text: str
    subject: str
    # The event as JSON, for channels that carry data (webhooks).
    payload: dict = field(default_factory=dict)


class DeliveryError(Exception):
    """The message was not accepted. `permanent` failures (a refused address, a channel that is not
    configured) are not retried: trying again cannot change the answer."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent

"""The one interface every channel implements: `send(message)` returns when the message is
accepted, and raises `DeliveryError` (with a message worth keeping in `error_message`) when not.
A channel's `send` is a plain function (run on a thread by the worker) or a coroutine function
(awaited on the worker's event loop: webhooks)."""

from dataclasses import dataclass, field

from iothub.outbox import SendFailed


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


class DeliveryError(SendFailed):
    """The message was not accepted. `permanent` failures (a refused address, a channel that is not
    configured) are not retried: trying again cannot change the answer."""

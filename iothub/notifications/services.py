"""Writes to notifications: templates, and deliveries enqueued for an event's actions."""

from iothub.events.models import Event


def notification_deliveries_enqueue(*, event: Event, action_index: int, action: dict) -> int:
    """Enqueue the deliveries of an event's `notification` action, inside the ingest transaction:
    one row per distinct recipient (the template's plus the action's), with the rendered message
    and the template's priority. Returns the number of rows written.

    Placeholder until the notifications work lands: it enqueues nothing.
    """
    return 0

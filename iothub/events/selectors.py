"""Reads of events."""

from iothub.events.models import Event


def event_summary(event: Event) -> dict:
    """The short form of an event, as the ingest reply lists it."""
    return {
        "id": event.id,
        "rule": event.rule_id,
        "severity": event.severity,
        "message": event.message,
        "status": event.status,
        "timestamp": event.timestamp,
    }

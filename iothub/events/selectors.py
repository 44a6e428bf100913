"""Reads of events, and the short form of an event that replies and lists show."""

from django.db.models import QuerySet

from iothub.events.models import Event


def event_list() -> QuerySet[Event]:
    """Events, newest first, with what their API representation reads, in one query."""
    return Event.objects.select_related("rule", "acknowledged_by", "resolved_by")


def event_summary(event: Event) -> dict:
    """An event in a few fields: what the ingest reply lists for the events a message raised.

    Reads only the event's own columns (the rule's name is in its metadata), so listing the events
    of a batch costs no query. Values are left to the JSON encoder (DRF's or Django's), which
    writes the UUID as a string and the time in ISO 8601 with `Z`, as everywhere in the API."""
    rule = (event.metadata or {}).get("rule", {})
    return {
        "id": event.id,
        "rule": event.rule_id,
        "rule_name": rule.get("name"),
        "severity": event.severity,
        "status": event.status,
        "timestamp": event.timestamp,
        "telemetry_id": event.telemetry_id,
        "message": event.message,
    }

"""The spec's `events` table: what a rule raised, and what its actions did."""

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.utils import timezone

from iothub.db import Now
from iothub.rules.models import Rule, Severity


class EventStatus(models.TextChoices):
    NEW = "new", "New"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


class Event(models.Model):
    id = models.BigAutoField(primary_key=True)
    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, db_index=False, related_name="events")
    # No foreign key, as the spec says: retention drops hypertable rows an event may point at.
    telemetry_id = models.BigIntegerField(null=True, blank=True)
    timestamp = models.DateTimeField(default=timezone.now, db_default=Now())
    severity = models.CharField(max_length=20, choices=Severity.choices)
    message = models.TextField()
    execution_results = models.JSONField(default=list)
    metadata = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=EventStatus.choices, default=EventStatus.NEW, db_default="new")
    # Extensions: who moved the event along its lifecycle, when, and what they noted. The user
    # columns carry no database constraint (the spec's tables have only the spec's foreign keys);
    # Django sets them to NULL when a user is deleted.
    acknowledged_at = models.DateTimeField(null=True, blank=True, editable=False)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        db_index=False,
        db_constraint=False,
        related_name="+",
    )
    acknowledgement_note = models.TextField(null=True, blank=True, editable=False)
    resolved_at = models.DateTimeField(null=True, blank=True, editable=False)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        db_index=False,
        db_constraint=False,
        related_name="+",
    )
    resolution_note = models.TextField(null=True, blank=True, editable=False)
    # Extensions of the rule's state machine (docs/rules.md): breaches folded into this open event
    # (`dedupe_while_open`), the auto-resolve's clearing reading, and the worker's reminders and
    # escalation, each due at a time the worker claims by.
    occurrences = models.IntegerField(default=1, db_default=1, editable=False)
    last_value = models.JSONField(null=True, blank=True, editable=False)
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_telemetry_id = models.BigIntegerField(null=True, blank=True, editable=False)
    resolved_by_system = models.BooleanField(default=False, db_default=False, editable=False)
    resolved_telemetry_id = models.BigIntegerField(null=True, blank=True, editable=False)
    resolved_value = models.JSONField(null=True, blank=True, editable=False)
    reminders_sent = models.IntegerField(default=0, db_default=0, editable=False)
    next_reminder_at = models.DateTimeField(null=True, blank=True, editable=False)
    escalation_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    escalated_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        db_table = "events"
        ordering = ["-timestamp", "-id"]
        indexes = [
            models.Index(fields=["rule"], name="idx_event_rule"),
            models.Index(fields=["telemetry_id"], name="idx_event_telemetry"),
            models.Index(fields=["status", "timestamp"], name="idx_event_status_time"),
            models.Index(fields=["timestamp", "severity", "status"], name="idx_event_time_severity_status"),
            GinIndex(fields=["execution_results"], name="idx_event_execution_results_gin"),
            # The worker's claims: unacknowledged events with a reminder or an escalation due.
            models.Index(fields=["next_reminder_at"], name="idx_event_reminder_due", condition=models.Q(status="new")),
            models.Index(
                fields=["escalation_due_at"], name="idx_event_escalation_due", condition=models.Q(status="new")
            ),
        ]

    def __str__(self) -> str:
        return f"event {self.id} ({self.severity}, {self.status})"

"""The spec's `rules` table, with the decided extensions `metric` and `severity`, the alarm options
of the rule's state machine (docs/rules.md), and `rule_states`: where each rule's state is kept."""

import uuid

from django.contrib.postgres.functions import RandomUUID
from django.contrib.postgres.indexes import GinIndex
from django.db import models

from iothub.db import Now
from iothub.devices.models import Device


class Operator(models.TextChoices):
    GT = "gt", "greater than (>)"
    LT = "lt", "less than (<)"
    GTE = "gte", "greater than or equal (>=)"
    LTE = "lte", "less than or equal (<=)"
    EQ = "eq", "equal (=)"
    NEQ = "neq", "not equal (!=)"
    # Not a comparison: no reading of the metric for `duration_seconds` (the worker evaluates it).
    NODATA = "nodata", "no data for duration_seconds"


class Severity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    WARNING = "warning", "Warning"
    INFO = "info", "Info"


class Rule(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=RandomUUID(), editable=False)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, db_index=False, related_name="rules")
    name = models.CharField(max_length=255)
    description = models.TextField(null=True, blank=True)
    operator = models.CharField(max_length=10, choices=Operator.choices)
    threshold = models.DecimalField(max_digits=15, decimal_places=4)
    action_config = models.JSONField(help_text="The actions to take when the rule triggers.")
    # Nullable as in the spec; NULL reads as the default (15 minutes).
    cooldown_minutes = models.IntegerField(null=True, default=15, db_default=15)
    last_triggered_at = models.DateTimeField(null=True, blank=True)
    # Nullable as in the spec; NULL reads as disabled.
    is_enabled = models.BooleanField(null=True, default=True, db_default=True)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())
    # Extensions: which metric the rule reads (NULL: the device type's primary metric) and the
    # severity copied to the events it raises.
    metric = models.CharField(max_length=50, null=True, blank=True)
    severity = models.CharField(max_length=20, choices=Severity.choices, default=Severity.WARNING, db_default="warning")
    # Extensions: the alarm options (docs/rules.md). Their defaults keep the spec's behaviour: an
    # event on every reading that meets the condition once the cooldown has passed.
    duration_seconds = models.IntegerField(default=0, db_default=0)
    clear_threshold = models.DecimalField(max_digits=15, decimal_places=4, null=True, blank=True)
    clear_duration_seconds = models.IntegerField(default=0, db_default=0)
    auto_resolve = models.BooleanField(default=False, db_default=False)
    dedupe_while_open = models.BooleanField(default=False, db_default=False)
    reminder_minutes = models.IntegerField(null=True, blank=True)
    reminder_limit = models.IntegerField(null=True, blank=True)
    escalation = models.JSONField(null=True, blank=True)

    class Meta:
        db_table = "rules"
        ordering = ["name"]
        indexes = [
            models.Index(fields=["device", "is_enabled"], name="idx_rule_device_enabled"),
            models.Index(fields=["is_enabled"], name="idx_rule_is_enabled"),
            models.Index(fields=["last_triggered_at"], name="idx_rule_last_triggered"),
            GinIndex(fields=["action_config"], name="idx_rule_action_config_gin"),
        ]

    def __str__(self) -> str:
        return self.name


class RulePhase(models.TextChoices):
    OK = "ok", "OK"
    PENDING = "pending", "Pending"  # the condition holds, not yet for `duration_seconds`
    FIRING = "firing", "Firing"  # the condition held long enough: an event was raised
    CLEARED = "cleared", "Cleared"  # back on the safe side while the event is still open


class RuleState(models.Model):
    """Where a rule stands (an extension table, docs/schema.md): written by whoever evaluates the
    rule, under this row's lock, so that ingest processes and the worker agree. Only rules that use
    the alarm options (`rule_is_stateful`) keep one; a spec-only rule's state is its
    `last_triggered_at`."""

    rule = models.OneToOneField(Rule, on_delete=models.CASCADE, primary_key=True, related_name="state")
    phase = models.CharField(max_length=10, choices=RulePhase.choices, default=RulePhase.OK, db_default="ok")
    # When the phase began, by the readings' timestamps (pending since, firing since, cleared since).
    since = models.DateTimeField(null=True, blank=True)
    # The newest reading the rule has judged: an older one cannot move the state back in time, and a
    # nodata rule counts its silence from it.
    last_reading_at = models.DateTimeField(null=True, blank=True)
    # The event the rule raised and has not seen resolved (no database constraint: an event row
    # deleted by a SQL client leaves a dangling id, read as no open event).
    open_event_id = models.BigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())

    class Meta:
        db_table = "rule_states"

    def __str__(self) -> str:
        return f"{self.rule_id}: {self.phase}"

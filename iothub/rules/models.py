"""The spec's `rules` table, with the decided extensions `metric` and `severity`."""

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

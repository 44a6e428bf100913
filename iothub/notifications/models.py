"""The spec's `notification_templates` and `notification_deliveries` tables.

A delivery row is one message to one recipient; the table is the worker's queue.
"""

from django.contrib.postgres.indexes import GinIndex
from django.db import models

from iothub.db import Now
from iothub.events.models import Event


class RecipientType(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    WEBHOOK = "webhook", "Webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class NotificationTemplate(models.Model):
    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=100)
    message_template = models.TextField(help_text="Message with {placeholders}.")
    recipients = models.JSONField(help_text="Default recipients of every message.")
    # The spec's integer columns with defaults are nullable; NULL reads as the default.
    priority = models.IntegerField(null=True, default=1, db_default=1, help_text="Lower is sent first.")
    retry_count = models.IntegerField(null=True, default=3, db_default=3)
    retry_delay_minutes = models.IntegerField(null=True, default=5, db_default=5)
    is_active = models.BooleanField(null=True, default=True, db_default=True)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())

    class Meta:
        db_table = "notification_templates"
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["name"], name="notification_templates_name_key")]
        indexes = [
            models.Index(fields=["name"], name="idx_notification_template_name"),
            models.Index(fields=["is_active"], name="idx_notification_template_active"),
            models.Index(fields=["priority"], name="idx_notification_template_priority"),
            GinIndex(fields=["recipients"], name="idx_notification_template_recipients_gin"),
        ]

    def __str__(self) -> str:
        return self.name


class NotificationDelivery(models.Model):
    id = models.BigAutoField(primary_key=True)
    # The database constraint (ON DELETE CASCADE, as the spec says) is created by the migration;
    # Django 6.0 cannot declare a database-level cascade itself.
    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, db_index=False, db_constraint=False, related_name="deliveries"
    )
    template = models.ForeignKey(
        NotificationTemplate, on_delete=models.PROTECT, db_index=False, related_name="deliveries"
    )
    recipient_type = models.CharField(max_length=20, choices=RecipientType.choices)
    recipient_address = models.TextField()
    recipient_name = models.CharField(max_length=255, null=True, blank=True)
    rendered_message = models.TextField()
    status = models.CharField(
        max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING, db_default="pending"
    )
    priority = models.IntegerField(null=True, default=1, db_default=1)
    attempt_count = models.IntegerField(null=True, default=0, db_default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    # An additive extension (docs/schema.md): when the delivery is due, now() for a new row; the
    # worker writes it after a failed attempt from the template's retry_delay_minutes.
    next_attempt_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "notification_deliveries"
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "notification deliveries"
        indexes = [
            models.Index(fields=["event"], name="idx_notification_delivery_event"),
            models.Index(fields=["status", "priority", "created_at"], name="idx_notification_delivery_queue"),
            models.Index(fields=["status", "attempt_count", "last_attempt_at"], name="idx_notification_delivery_retry"),
            # When the next pending delivery is due; finished rows leave the index.
            models.Index(
                fields=["next_attempt_at"], name="idx_notification_delivery_due", condition=models.Q(status="pending")
            ),
        ]

    def __str__(self) -> str:
        return f"delivery {self.id} to {self.recipient_type} {self.recipient_address} ({self.status})"

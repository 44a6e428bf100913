"""`machine_commands`, an additive extension table: the outbox of `stop_machine` actions.

Ingest writes one row per `stop_machine` action of an event, in the transaction that raises the
event; the worker claims due rows and calls the plant's machine API. The row is the queue; the
event's `execution_results` entry is what people read.
"""

from django.db import models

from iothub.db import Now
from iothub.events.models import Event


class CommandStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


class MachineCommand(models.Model):
    id = models.BigAutoField(primary_key=True)
    # ON DELETE CASCADE in the database, as for notification deliveries (created by the migration;
    # Django 6.0 cannot declare a database-level cascade itself).
    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, db_index=False, db_constraint=False, related_name="machine_commands"
    )
    action_index = models.IntegerField(help_text="Position of the action in the rule's action_config.")
    machine_id = models.CharField(max_length=255)
    command = models.CharField(max_length=20, default="stop", db_default="stop")
    status = models.CharField(
        max_length=20, choices=CommandStatus.choices, default=CommandStatus.PENDING, db_default="pending"
    )
    attempt_count = models.IntegerField(default=0, db_default=0)
    next_attempt_at = models.DateTimeField(db_default=Now())
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "machine_commands"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["event", "action_index"], name="machine_commands_event_action_key"),
        ]
        indexes = [
            # The worker's claim: pending rows by due time; finished rows leave the index.
            models.Index(
                fields=["next_attempt_at"],
                name="idx_machine_command_due",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.command} machine {self.machine_id} for event {self.event_id} ({self.status})"

"""`ingest_idempotency_keys`, an additive extension table: the first answer to each request a
device sent with an `Idempotency-Key`, kept for a while so that a retry gets that answer again
instead of storing its readings twice (docs/ingest.md).

Written by the ingest transaction that stores the request's readings, so a key is recorded if and
only if its readings are committed.
"""

from django.db import models

from iothub.db import Now
from iothub.devices.models import Device


class IdempotencyKey(models.Model):
    pk = models.CompositePrimaryKey("device", "key")
    # ON DELETE CASCADE in the database (created by the migration): a device's keys go with it.
    device = models.ForeignKey(Device, on_delete=models.CASCADE, db_index=False, db_constraint=False, related_name="+")
    key = models.CharField(max_length=255, help_text="The request's Idempotency-Key, as the device sent it.")
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the request's body, hex.")
    status = models.SmallIntegerField(null=True, blank=True, help_text="The status of the first answer.")
    response = models.TextField(null=True, blank=True, help_text="The body of the first answer, as sent.")
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "ingest_idempotency_keys"
        indexes = [models.Index(fields=["created_at"], name="idx_ingest_key_created")]

    def __str__(self) -> str:
        return f"idempotency key {self.key!r} of device {self.device_id}"

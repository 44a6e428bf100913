"""The spec's `telemetry` table, a TimescaleDB hypertable partitioned on `timestamp`.

TimescaleDB requires every unique index of a hypertable to include the partitioning column, so the
primary key is `(id, timestamp)`; `id` keeps BIGSERIAL's behaviour (bigint filled from its own
sequence), which the initial migration creates.
"""

from django.contrib.postgres.indexes import GinIndex
from django.db import models

from iothub.db import NextVal, Now
from iothub.devices.models import Device

TELEMETRY_ID_SEQUENCE = "telemetry_id_seq"


class Telemetry(models.Model):
    pk = models.CompositePrimaryKey("id", "timestamp")
    id = models.BigIntegerField(db_default=NextVal(TELEMETRY_ID_SEQUENCE), editable=False)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, db_index=False, related_name="+")
    timestamp = models.DateTimeField(db_default=Now())
    payload = models.JSONField()

    class Meta:
        db_table = "telemetry"
        verbose_name_plural = "telemetry"
        indexes = [
            models.Index(fields=["device", "timestamp"], name="idx_telemetry_device_time"),
            GinIndex(fields=["payload"], name="idx_telemetry_payload_gin"),
        ]

    def __str__(self) -> str:
        return f"telemetry {self.id} of device {self.device_id} at {self.timestamp:%Y-%m-%d %H:%M:%S}"

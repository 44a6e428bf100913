"""The spec's `telemetry` table, a TimescaleDB hypertable partitioned on `timestamp`.

TimescaleDB requires every unique index of a hypertable to include the partitioning column, so the
primary key is `(id, timestamp)`; `id` keeps BIGSERIAL's behaviour (bigint filled from its own
sequence), which the initial migration creates.
"""

import json
import math

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models

from iothub.db import NextVal, Now
from iothub.devices.models import Device

TELEMETRY_ID_SEQUENCE = "telemetry_id_seq"


def _float_or_text(text: str) -> float | str:
    number = float(text)
    return number if math.isfinite(number) else text


def _int_or_text(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits(), 4,300)
        return text


class PayloadDecoder(json.JSONDecoder):
    """Reads any stored payload. Ingest stores numbers within ±2**63 only, but a row written in
    SQL (or before that bound) may hold any JSON number: one beyond double precision's range, or
    an integer of more digits than Python converts, reads as its decimal text, so that a query
    answers rather than fails."""

    def __init__(self, **kwargs):
        super().__init__(parse_float=_float_or_text, parse_int=_int_or_text, **kwargs)


class Telemetry(models.Model):
    pk = models.CompositePrimaryKey("id", "timestamp")
    id = models.BigIntegerField(db_default=NextVal(TELEMETRY_ID_SEQUENCE), editable=False)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, db_index=False, related_name="+")
    timestamp = models.DateTimeField(db_default=Now())
    payload = models.JSONField(decoder=PayloadDecoder)

    class Meta:
        db_table = "telemetry"
        verbose_name_plural = "telemetry"
        indexes = [
            models.Index(fields=["device", "timestamp"], name="idx_telemetry_device_time"),
            GinIndex(fields=["payload"], name="idx_telemetry_payload_gin"),
        ]

    def __str__(self) -> str:
        return f"telemetry {self.id} of device {self.device_id} at {self.timestamp:%Y-%m-%d %H:%M:%S}"


class NumericField(models.DecimalField):
    """PostgreSQL's unconstrained `numeric`: any JSON number exactly, with its own scale, so that
    sums of roll-ups are the sums of the readings digit for digit (and an average, sum over
    count, is the one `avg` gives)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_digits", None)
        kwargs.setdefault("decimal_places", None)
        super().__init__(*args, **kwargs)

    def check(self, **kwargs):
        # DecimalField's checks ask for a precision and scale, which `numeric` here has not.
        return models.Field.check(self, **kwargs)

    def db_type(self, connection) -> str:
        return "numeric"


class TelemetryRollup(models.Model):
    """One device's readings of one metric within one bucket (a minute or an hour, aligned on the
    aggregates' origin): how many, their sum, smallest, largest, and the last one (by timestamp,
    then telemetry id). Written by ingest in the readings' transaction
    (`iothub.telemetry.services`), trimmed by retention, read by the aggregates
    (`iothub.telemetry.selectors`). Not a table of the spec: docs/schema.md."""

    pk = models.CompositePrimaryKey("device_id", "metric", "bucket_seconds", "bucket")
    # The database cascades a device's deletion (ON DELETE CASCADE, added by the migration).
    device = models.ForeignKey(
        Device, on_delete=models.DO_NOTHING, db_index=False, db_constraint=False, related_name="+"
    )
    metric = models.CharField(max_length=64)
    bucket_seconds = models.IntegerField()
    bucket = models.DateTimeField()
    count = models.BigIntegerField()
    sum = NumericField()
    min = NumericField()
    max = NumericField()
    last = NumericField()
    last_timestamp = models.DateTimeField()
    last_telemetry_id = models.BigIntegerField()

    class Meta:
        db_table = "telemetry_rollups"

    def __str__(self) -> str:
        return f"{self.metric} of device {self.device_id}, {self.bucket_seconds} s from {self.bucket:%Y-%m-%d %H:%M}"


class TelemetryRollupQueue(models.Model):
    """A batch of readings stored by ingest and not rolled up yet: their telemetry ids, the
    devices they belong to, and the span of their timestamps. Inserted by ingest in the readings'
    statement, claimed, rolled up and deleted by the worker in one transaction
    (`telemetry_rollups_process`); the aggregates add the readings still queued to the roll-ups
    (`iothub.telemetry.selectors`). Not a table of the spec: docs/schema.md."""

    id = models.BigAutoField(primary_key=True)
    telemetry_ids = ArrayField(models.BigIntegerField())
    device_ids = ArrayField(models.UUIDField())
    first_timestamp = models.DateTimeField()
    last_timestamp = models.DateTimeField()
    queued_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "telemetry_rollup_queue"

    def __str__(self) -> str:
        return f"{len(self.telemetry_ids)} readings queued for roll-up at {self.queued_at:%Y-%m-%d %H:%M:%S}"

"""The spec's `telemetry` table, a TimescaleDB hypertable partitioned on `timestamp`.

TimescaleDB requires every unique index of a hypertable to include the partitioning column, so the
primary key is `(id, timestamp)`; `id` keeps BIGSERIAL's behaviour (bigint filled from its own
sequence), which the initial migration creates.
"""

import json
import math

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

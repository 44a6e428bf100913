"""Device types and devices, as the spec's `device_types` and `devices` tables."""

import uuid

from django.contrib.postgres.functions import RandomUUID
from django.core.exceptions import ValidationError
from django.db import models

from iothub.db import Now


class MetricName(models.TextChoices):
    VIBRATION = "vibration", "Vibration"
    TEMPERATURE = "temperature", "Temperature"
    PRESSURE = "pressure", "Pressure"


class DeviceStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    INACTIVE = "inactive", "Inactive"
    ERROR = "error", "Error"


class DeviceType(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=RandomUUID(), editable=False)
    name = models.CharField(max_length=100, help_text="Device type name, e.g. vibration_sensor.")
    description = models.TextField(null=True, blank=True)
    metric_name = models.CharField(
        max_length=20, choices=MetricName.choices, help_text="The primary metric of this type."
    )
    metric_unit = models.CharField(max_length=50, help_text="Unit of the primary metric, e.g. mm_s.")
    metric_min = models.DecimalField(
        max_digits=15, decimal_places=4, null=True, blank=True, help_text="Lowest expected value."
    )
    metric_max = models.DecimalField(
        max_digits=15, decimal_places=4, null=True, blank=True, help_text="Highest expected value."
    )
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "device_types"
        ordering = ["name"]
        # A UniqueConstraint rather than unique=True: the latter adds a `_like` index the spec
        # does not have.
        constraints = [models.UniqueConstraint(fields=["name"], name="device_types_name_key")]
        indexes = [
            models.Index(fields=["name"], name="idx_device_type_name"),
            models.Index(fields=["metric_name"], name="idx_device_type_metric"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # Here rather than in a service so that the admin's forms enforce it too.
        if self.metric_min is not None and self.metric_max is not None and self.metric_min > self.metric_max:
            message = f"metric_min ({self.metric_min}) must not be greater than metric_max ({self.metric_max})."
            raise ValidationError({"metric_min": message, "metric_max": message}, code="invalid_range")


class Device(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=RandomUUID(), editable=False)
    device_type = models.ForeignKey(DeviceType, on_delete=models.PROTECT, db_index=False, related_name="devices")
    name = models.CharField(max_length=255)
    serial_number = models.CharField(max_length=100)
    location = models.TextField(null=True, blank=True)
    status = models.CharField(
        max_length=20, choices=DeviceStatus.choices, default=DeviceStatus.ACTIVE, db_default="active"
    )
    last_seen = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())
    # Extension: SHA-256 of the device's bearer token. Tokens are 256-bit random strings, so a
    # fast hash is as safe as a slow one and keeps ingest authentication to one index lookup.
    token_hash = models.CharField(max_length=64, null=True, blank=True, editable=False)
    # Extension: the same token hashed as Mosquitto's password file holds it (`$6$salt$hash`),
    # written with `token_hash`, so that the MQTT broker can check the token the hub does not keep
    # (iothub/devices/broker.py). Null: no MQTT access (no token, or one issued before MQTT).
    mqtt_password_hash = models.CharField(max_length=128, null=True, blank=True, editable=False)
    # Extension: the last value of every metric the device reported, with its time and telemetry
    # id, kept by ingest, so "latest values" never scans the hypertable:
    # {"vibration": {"value": 5.2, "timestamp": "2025-01-21T10:00:00+00:00", "telemetry_id": 7}}
    latest_metrics = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        db_table = "devices"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["serial_number"], name="devices_serial_number_key"),
            models.UniqueConstraint(fields=["token_hash"], name="devices_token_hash_key"),
        ]
        indexes = [
            models.Index(fields=["serial_number"], name="idx_device_serial"),
            models.Index(fields=["device_type"], name="idx_device_type"),
            models.Index(fields=["status", "last_seen"], name="idx_device_status_last_seen"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.serial_number})"

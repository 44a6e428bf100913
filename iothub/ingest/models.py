"""Two additive extension tables that keep a retried message from being stored twice, each written
by the ingest transaction that stores the message's readings (so a record exists if and only if
those readings are committed):

- `ingest_idempotency_keys`: the first answer to each HTTP request a device sent with an
  `Idempotency-Key`, kept for a while so that a retry gets that answer again (docs/ingest.md);
- `ingest_mqtt_deliveries`: which MQTT message each consumer stored last under each packet id, so
  that the broker's redelivery of a message already stored is acknowledged, not stored again
  (docs/mqtt.md).
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


class MqttDelivery(models.Model):
    """The last message a consumer stored under a packet id of its broker session. Mosquitto numbers
    the messages of a session 1 to 65535 in turn, so a packet id comes back after 65,535 messages:
    the ingest transaction overwrites the row of a first delivery, and deletes the rows far behind
    the newest packet id (iothub/ingest/services.py, "MQTT deliveries")."""

    pk = models.CompositePrimaryKey("consumer", "packet_id")
    consumer = models.CharField(max_length=255, help_text="The consumer's MQTT client id (its session).")
    packet_id = models.IntegerField(help_text="The PUBLISH packet id the broker gave the message, 1 to 65535.")
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the message's payload, hex.")
    redelivered = models.BooleanField(help_text="The DUP flag of the delivery that stored it.")
    stored_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "ingest_mqtt_deliveries"

    def __str__(self) -> str:
        return f"MQTT packet {self.packet_id} of {self.consumer}"

"""The MQTT door: a consumer that takes the devices' messages from the broker and stores them through
the batched writer, acknowledging each one (PUBACK) only once its outcome is final (docs/mqtt.md).

    broker ── PUBLISH, QoS 1, $share/<group>/devices/+/telemetry ──▶ paho's network thread (on_message):
        the payload decoded, the serial number from the topic (the broker checked the device's
        credentials and that the topic is its own), the packet id ──▶ writer.submit
    the writer thread, after its transaction: the outcome ──▶ _finish
        Accepted (stored now, or a redelivery of a message stored before)      ──▶ PUBACK
        Refused, UnknownSender, Failed after its retries: the refusal published
          on devices/<serial>/errors, logged and counted                       ──▶ PUBACK
        Unavailable (the database is down), or the writer raised               ──▶ no PUBACK: the same
          request goes to the writer again after a pause, until it is stored

A message without its PUBACK stays the broker's: if this process dies, the broker delivers it again
(DUP set, same packet id) when the consumer's session reconnects, which is why the session is
persistent (clean start off, no expiry, a stable client id). A message stored whose PUBACK was lost
is recognised by its packet id and payload (`ingest_mqtt_deliveries`, written in the transaction
that stores it) and acknowledged without being stored again.

The broker sends at most IOTHUB_MQTT_RECEIVE_MAXIMUM messages unacknowledged: while the database is
down the consumer holds that many and the rest wait at the broker, in the session.
"""

import functools
import hashlib
import heapq
import itertools
import logging
import socket
import threading
import time
from dataclasses import dataclass, field

import orjson
import paho.mqtt.client as mqtt
from django.conf import settings
from django.utils import timezone
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from iothub import metrics
from iothub.ingest.mqtt_broker import errors_topic, telemetry_topic
from iothub.ingest.services import (
    Accepted,
    Failed,
    IngestRequest,
    MqttMessageId,
    Outcome,
    Refused,
    Unavailable,
    UnknownSender,
)
from iothub.ingest.validation import FieldError, IngestRejected, decode_body
from iothub.ingest.writer import IngestWriter

logger = logging.getLogger(__name__)

# A message the database refused for a reason nobody foresaw is tried this many times in all (the
# cause may pass) before it is answered as failed and acknowledged.
FAILED_ATTEMPTS = 3
# Pause before a message goes to the writer again: doubling from the first, up to the last.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0
SESSION_NEVER_EXPIRES = 0xFFFFFFFF


def default_client_id() -> str:
    return settings.IOTHUB_MQTT_CLIENT_ID or f"iothub-ingest-{socket.gethostname()}"


def shared_subscription(group: str) -> str:
    return f"$share/{group}/{telemetry_topic('+')}"


@dataclass
class _Flight:
    """A message taken from the broker and not yet acknowledged."""

    message: mqtt.MQTTMessage
    serial_number: str
    request: IngestRequest
    received: float  # time.monotonic()
    attempts: int = 0


@dataclass(order=True)
class _Retry:
    due: float
    order: int
    flight: _Flight = field(compare=False)


class MqttConsumer:
    def __init__(
        self,
        *,
        writer: IngestWriter,
        client_id: str,
        host: str,
        port: int,
        username: str,
        password: str,
        share_group: str,
        receive_maximum: int,
        ca_file: str = "",
        retire: bool = False,
    ):
        self.writer = writer
        self.client_id = client_id
        self.host = host
        self.port = port
        self.subscription = shared_subscription(share_group)
        self.receive_maximum = receive_maximum
        self.retire = retire
        self.last_message = time.monotonic()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        self.client.username_pw_set(username, password)
        if ca_file:
            self.client.tls_set(ca_certs=ca_file)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._flights: dict[int, _Flight] = {}  # by packet id
        self._retries: list[_Retry] = []
        self._retry_order = itertools.count()
        self._retry_wakeup = threading.Condition(self._lock)
        self._retry_thread = threading.Thread(target=self._retry_loop, name="mqtt-retries", daemon=True)

    # --- Lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_NEVER_EXPIRES
        properties.ReceiveMaximum = self.receive_maximum
        self._retry_thread.start()
        self.client.connect_async(self.host, self.port, clean_start=False, properties=properties)
        self.client.loop_start()

    def idle(self, seconds: float) -> bool:
        """Whether no message arrived for `seconds` and none is waiting for its outcome."""
        with self._lock:
            return not self._flights and time.monotonic() - self.last_message >= seconds

    def stop(self, timeout: float = 30.0) -> None:
        """Take no more messages, let those in the writer finish (and be acknowledged), then
        disconnect, keeping the session: what was not acknowledged is delivered again next time
        (retiring: ending the session, which holds nothing more)."""
        self._closing.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            self._retry_wakeup.notify_all()
            while self._in_writer() and time.monotonic() < deadline:
                self._retry_wakeup.wait(0.1)
            left = len(self._flights)
        if left:
            logger.info("mqtt: %d messages left unacknowledged; the broker delivers them again", left)
        properties = None
        if self.retire and not left:
            properties = Properties(PacketTypes.DISCONNECT)
            properties.SessionExpiryInterval = 0
            logger.info("mqtt: consumer %s retired: its session ends", self.client_id)
        self.client.disconnect(properties=properties)
        self.client.loop_stop()

    def _in_writer(self) -> bool:
        waiting = {id(r.flight) for r in self._retries}
        return any(id(flight) not in waiting for flight in self._flights.values())

    # --- Broker callbacks (paho's network thread) -----------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            logger.error("mqtt: the broker at %s:%d refused the consumer: %s", self.host, self.port, reason_code)
            return
        logger.info(
            "mqtt: consumer %s connected to %s:%d (session %s)",
            self.client_id,
            self.host,
            self.port,
            "resumed" if flags.session_present else "new",
        )
        if self.retire:
            # No new messages for this session; those it holds still come, and are stored.
            client.unsubscribe(self.subscription)
            return
        # Again on every connection: harmless on a resumed session, needed on a new one.
        client.subscribe(self.subscription, options=SubscribeOptions(qos=1))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(code.is_failure for code in reason_codes):
            logger.error("mqtt: subscribing to %s was refused: %s", self.subscription, reason_codes)
            return
        logger.info("mqtt: subscribed to %s", self.subscription)
        self.connected.set()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        logger.info("mqtt: unsubscribed from %s to retire; storing what the session holds", self.subscription)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if not self._closing.is_set():
            logger.warning("mqtt: disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        if self._closing.is_set():
            return  # not acknowledged: the broker delivers it again to this session
        fingerprint = hashlib.sha256(message.payload).hexdigest()
        self.last_message = time.monotonic()
        with self._lock:
            earlier = self._flights.get(message.mid)
            if earlier is not None and earlier.request.mqtt.fingerprint == fingerprint:
                return  # delivered again while being stored: acknowledged once it is
        serial_number = message.topic.split("/")[1]
        request = IngestRequest(
            data=_payload_data(message.payload),
            received_at=timezone.now(),
            serial_number=serial_number,
            mqtt=MqttMessageId(
                consumer=self.client_id, packet_id=message.mid, fingerprint=fingerprint, redelivered=bool(message.dup)
            ),
        )
        flight = _Flight(message=message, serial_number=serial_number, request=request, received=time.monotonic())
        with self._lock:
            self._flights[message.mid] = flight
        self._submit(flight)

    # --- Outcomes (the writer's thread) ----------------------------------------------------------

    def _submit(self, flight: _Flight) -> None:
        flight.attempts += 1
        self.writer.submit_then(flight.request, functools.partial(self._finish, flight))

    def _finish(self, flight: _Flight, outcome: Outcome | None, error: BaseException | None) -> None:
        if error is not None:  # the writer logged it; the batch wrote nothing
            outcome = Failed(str(error))
        if isinstance(outcome, Accepted):
            if outcome.replayed:
                logger.info(
                    "mqtt: message %d from %s was stored before its acknowledgement was lost: acknowledged again",
                    flight.message.mid,
                    flight.serial_number,
                )
            metrics.mqtt_message_finished(
                outcome="duplicate" if outcome.replayed else "stored",
                readings=len(outcome.readings),
                seconds=time.monotonic() - flight.received,
            )
        elif isinstance(outcome, Refused):
            rejection = outcome.rejection
            logger.info(
                "mqtt: message from %s refused (%d): %s", flight.serial_number, rejection.status, rejection.errors[0]
            )
            self._answer(flight, rejection.status, rejection.as_dict())
            metrics.mqtt_message_finished(outcome="refused", status=rejection.status)
        elif isinstance(outcome, UnknownSender):
            # The device was deleted (or renamed) after the broker took its message.
            logger.warning("mqtt: message from %s dropped: no device has this serial number", flight.serial_number)
            metrics.mqtt_message_finished(outcome="unknown_device")
        elif isinstance(outcome, Unavailable) or flight.attempts < FAILED_ATTEMPTS:
            metrics.mqtt_message_retried()
            self._retry_later(flight)
            return
        else:
            logger.error(
                "mqtt: message from %s failed %d times and is dropped (%s); its payload: %r",
                flight.serial_number,
                flight.attempts,
                outcome.error,
                flight.message.payload[:2000],
            )
            self._answer(flight, 500, {"detail": "The message failed on the server; nothing was stored.", "errors": []})
            metrics.mqtt_message_finished(outcome="failed")
        self._acknowledge(flight)

    def _answer(self, flight: _Flight, status: int, body: dict) -> None:
        """The refusal on the device's errors topic, with the correlation data the device sent."""
        properties = None
        correlation = getattr(flight.message.properties, "CorrelationData", None)
        if correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = correlation
        payload = orjson.dumps({"status": status, **body})
        self.client.publish(errors_topic(flight.serial_number), payload, qos=1, properties=properties)

    def _acknowledge(self, flight: _Flight) -> None:
        with self._lock:
            if self._flights.get(flight.message.mid) is flight:
                del self._flights[flight.message.mid]
            self._retry_wakeup.notify_all()
        self.client.ack(flight.message.mid, 1)

    # --- Retries -----------------------------------------------------------------------------------

    def _retry_later(self, flight: _Flight) -> None:
        delay = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (flight.attempts - 1))
        with self._lock:
            heapq.heappush(self._retries, _Retry(time.monotonic() + delay, next(self._retry_order), flight))
            self._retry_wakeup.notify_all()

    def _retry_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closing.is_set() and (not self._retries or self._retries[0].due > time.monotonic()):
                    timeout = self._retries[0].due - time.monotonic() if self._retries else None
                    self._retry_wakeup.wait(timeout)
                if self._closing.is_set():
                    return
                flight = heapq.heappop(self._retries).flight
            self._submit(flight)


def _payload_data(payload: bytes) -> object:
    """The decoded message, or its refusal (answered once the device is known, as HTTP does)."""
    if len(payload) > settings.IOTHUB_INGEST_MAX_BODY_BYTES:
        limit = settings.IOTHUB_INGEST_MAX_BODY_BYTES
        return IngestRejected(413, [FieldError("body", f"is larger than the limit of {limit} bytes")])
    try:
        return decode_body(payload)
    except IngestRejected as rejected:
        return rejected

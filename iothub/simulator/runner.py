"""Sending simulated readings through the hub's real ingest, HTTP or MQTT, at a steady rate.

Message `i` is due at `start + i / rate` and belongs to device `i mod n`, so the load is spread
evenly over the devices and over time. A few sender threads share one keep-alive HTTP client
(httpx's pool keeps one connection per thread open), so a rate of hundreds of messages per second
is not bound by one request's latency. Every outcome is counted from the hub's own reply: a 201
is a stored reading (and lists the events it raised), a 4xx a refused one, anything else a failure.

Over MQTT (`MqttPublisher`) each device has its own connection with its own credentials and
publishes at QoS 1: a message the broker acknowledged is sent, one the hub refused comes back on
the device's errors topic (counted as rejected), a refused publication or connection is a failure.
"""

import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from iothub.simulator.profiles import Machine

INGEST_PATH = "/api/v1/telemetry/"
PAYLOAD_VERSION = "0.0.1"


@dataclass
class SimulatedDevice:
    serial_number: str
    token: str
    machine: Machine
    last_sent: float | None = None


@dataclass
class Summary:
    planned: int = 0
    sent: int = 0  # stored by the hub (201)
    rejected: int = 0  # refused by the hub (4xx)
    failed: int = 0  # no answer, or a 5xx
    events: int = 0  # events the stored readings raised, as the replies list them
    anomalies: int = 0  # readings generated out of the normal band
    elapsed: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # the first few refusals, as the hub worded them

    @property
    def attempted(self) -> int:
        return self.sent + self.rejected + self.failed


class MqttPublisher:
    """One MQTT 5 connection per simulated device, publishing at QoS 1 to its telemetry topic and
    listening on its errors topic."""

    def __init__(self, *, host: str, port: int, timeout: float = 10.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.clients: dict[str, mqtt.Client] = {}
        self.refusals: queue.Queue = queue.Queue()
        self._acks: dict[tuple[str, int], queue.Queue] = {}
        self._lock = threading.Lock()

    def open(self, devices: Sequence[SimulatedDevice], *, wait: float = 45.0) -> None:
        """Connect every device. A token renewed a moment ago may not be the broker's yet (the hub
        rewrites its password file at once where it can, else within a resync): refused
        connections are tried again for up to `wait` seconds."""
        deadline = time.monotonic() + wait
        for device in devices:
            while True:
                client = self._client(device)
                connected: queue.Queue = queue.Queue()
                client.on_connect = lambda c, u, flags, code, props, box=connected: box.put(code)
                client.connect(self.host, self.port)
                client.loop_start()
                code = connected.get(timeout=self.timeout)
                if not code.is_failure:
                    break
                client.loop_stop()
                if time.monotonic() > deadline:
                    raise ConnectionError(f"the broker refused {device.serial_number}: {code}")
                time.sleep(0.5)
            client.subscribe(f"devices/{device.serial_number}/errors", qos=1)
            self.clients[device.serial_number] = client

    def _client(self, device: SimulatedDevice) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.username_pw_set(device.serial_number, device.token)
        serial = device.serial_number
        client.on_publish = lambda c, u, mid, code, props: self._ack(serial, mid).put(code)
        client.on_message = lambda c, u, message: self.refusals.put(json.loads(message.payload))
        return client

    def _ack(self, serial: str, mid: int) -> queue.Queue:
        with self._lock:
            return self._acks.setdefault((serial, mid), queue.Queue())

    def send(self, device: SimulatedDevice, body: bytes) -> str | None:
        """Publish; None once the broker acknowledged it, else what went wrong."""
        client = self.clients[device.serial_number]
        info = client.publish(f"devices/{device.serial_number}/telemetry", body, qos=1)
        try:
            code = self._ack(device.serial_number, info.mid).get(timeout=self.timeout)
        except queue.Empty:
            return "no PUBACK from the broker"
        with self._lock:
            del self._acks[(device.serial_number, info.mid)]
        return f"the broker refused it: {code}" if code.is_failure else None

    def close(self) -> None:
        for client in self.clients.values():
            client.disconnect()
            client.loop_stop()


class Simulation:
    """One run: `run()` blocks until every planned message was attempted, or `stop()` is called."""

    def __init__(
        self,
        *,
        url: str,
        devices: Sequence[SimulatedDevice],
        rate: float,
        duration: float,
        concurrency: int = 4,
        timeout: float = 10.0,
        on_result: Callable[[Summary], None] | None = None,
        keep_errors: int = 5,
        mqtt: MqttPublisher | None = None,
    ):
        if not devices:
            raise ValueError("no devices to simulate")
        if rate <= 0 or duration <= 0:
            raise ValueError("rate and duration must be positive")
        self.url = url.rstrip("/")
        self.devices = list(devices)
        self.rate = rate
        self.summary = Summary(planned=max(1, round(rate * duration)))
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.on_result = on_result
        self.keep_errors = keep_errors
        self.mqtt = mqtt
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._start = 0.0

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> Summary:
        if self.mqtt is not None:
            return self._run_mqtt()
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        self._start = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=self.timeout, limits=limits) as client:
            self._send_all(lambda device, body: self._record(self._post(client, device, body)))
        self.summary.elapsed = time.monotonic() - self._start
        return self.summary

    def _run_mqtt(self) -> Summary:
        self.mqtt.open(self.devices)
        self._start = time.monotonic()
        try:
            self._send_all(self._publish)
            time.sleep(1.0)  # the hub's refusals of the last messages come back meanwhile
        finally:
            self.mqtt.close()
        while not self.mqtt.refusals.empty():
            refusal = self.mqtt.refusals.get()
            with self._lock:
                self.summary.sent -= 1  # the broker took it, the hub refused it
                self.summary.rejected += 1
                self.summary.statuses[refusal.get("status")] += 1
                self._keep_error(refusal.get("status"), refusal)
        self.summary.elapsed = time.monotonic() - self._start
        return self.summary

    def _send_all(self, send: Callable[[SimulatedDevice, bytes], None]) -> None:
        threads = [
            threading.Thread(target=self._sender_loop, args=(send,), name=f"simulate-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.2)
        except KeyboardInterrupt:
            self.stop()
            for thread in threads:
                thread.join()

    def _sender_loop(self, send: Callable[[SimulatedDevice, bytes], None]) -> None:
        while True:
            message = self._take()
            if message is None:
                return
            due, device, body = message
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            send(device, body)

    def _publish(self, device: SimulatedDevice, body: bytes) -> None:
        error = self.mqtt.send(device, body)
        with self._lock:
            self.summary.statuses["mqtt" if error is None else "error"] += 1
            if error is None:
                self.summary.sent += 1
            else:
                self.summary.failed += 1
                self._keep_error(None, error)
        if self.on_result is not None:
            self.on_result(self.summary)

    def _take(self) -> tuple[float, SimulatedDevice, bytes] | None:
        """The next message: when it is due, whose it is, its body. The machine's state moves under
        the lock, so each device's readings are generated in order."""
        with self._lock:
            index = self._next
            if index >= self.summary.planned or self._stop.is_set():
                return None
            self._next += 1
            due = self._start + index / self.rate
            device = self.devices[index % len(self.devices)]
            dt = 0.0 if device.last_sent is None else max(0.0, due - device.last_sent)
            device.last_sent = due
            metrics, anomaly = device.machine.reading(dt)
            if anomaly:
                self.summary.anomalies += 1
        body = {"version": PAYLOAD_VERSION, "serial_number": device.serial_number, "metrics": metrics}
        return due, device, json.dumps(body, separators=(",", ":")).encode()

    def _post(self, client: httpx.Client, device: SimulatedDevice, body: bytes) -> tuple[int | None, dict | str]:
        headers = {"Authorization": f"Bearer {device.token}", "Content-Type": "application/json"}
        try:
            response = client.post(INGEST_PATH, content=body, headers=headers)
        except httpx.HTTPError as error:
            return None, f"{type(error).__name__}: {error}"
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text[:200]

    def _record(self, outcome: tuple[int | None, dict | str]) -> None:
        status, body = outcome
        with self._lock:
            summary = self.summary
            summary.statuses[status or "error"] += 1
            if status == 201 and isinstance(body, dict):
                summary.sent += body.get("count", 1)
                summary.events += len(body.get("events") or [])
            elif status is not None and 400 <= status < 500:
                summary.rejected += 1
                self._keep_error(status, body)
            else:
                summary.failed += 1
                self._keep_error(status, body)
        if self.on_result is not None:
            self.on_result(summary)

    def _keep_error(self, status: int | None, body: dict | str) -> None:
        if len(self.summary.errors) < self.keep_errors:
            detail = body.get("detail", body) if isinstance(body, dict) else body
            self.summary.errors.append(f"{status or 'no answer'}: {detail}")

"""The MQTT side of the hub for tests, all real: a Mosquitto of the hub's own configuration
(`mqtt_broker_config`'s files, in a temporary folder, on free ports), `manage.py run_ingest` as a
subprocess against the test database, devices as paho clients, and a TCP proxy that can hold back
what one side sends (a consumer's PUBACKs, a database connection)."""

import contextlib
import hashlib
import queue
import secrets
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from iothub.ingest.mqtt_broker import broker_files_write
from tests.hub_server import free_port
from tests.worker.process import WorkerProcess

CONSUMER_PASSWORD = "consumer-" + secrets.token_hex(8)


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail("the `mosquitto` broker is not installed: apt-get install mosquitto (.ci/run does it)")
    return found


class Broker:
    """A Mosquitto with the hub's configuration. The test's settings point at it, so that devices
    created by the test reach its password file, as `./scripts/run` arranges for the hub."""

    def __init__(self, folder: Path, settings, **tls: str):
        self.folder = folder
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.values = {
            "IOTHUB_MQTT_HOST": "127.0.0.1",
            "IOTHUB_MQTT_PORT": str(self.port),
            "IOTHUB_MQTT_PASSWORD": CONSUMER_PASSWORD,
            "IOTHUB_MQTT_BROKER_DIR": str(folder),
            "IOTHUB_MQTT_BROKER_PID_FILE": str(folder / "mosquitto.pid"),
            "IOTHUB_MQTT_RESYNC_SECONDS": "2",
        }
        if tls:
            self.values.update(
                IOTHUB_MQTT_TLS_PORT=str(self.tls_port),
                IOTHUB_MQTT_TLS_BIND="127.0.0.1",
                IOTHUB_MQTT_TLS_CERTFILE=tls["certfile"],
                IOTHUB_MQTT_TLS_KEYFILE=tls["keyfile"],
            )
        for name, value in self.values.items():
            setattr(settings, name, int(value) if name.endswith(("PORT", "SECONDS")) else value)
        self.files = broker_files_write(str(folder))
        self.log_path = folder / "mosquitto.log"
        self.process: subprocess.Popen | None = None
        self.consumers: list[ConsumerProcess] = []  # stopped with the broker, whatever a test did

    def start(self) -> "Broker":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.files.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pid_file = Path(self.values["IOTHUB_MQTT_BROKER_PID_FILE"])
                if pid_file.exists() and pid_file.read_text().strip():
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen in 10 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        for consumer in self.consumers:
            if consumer.process is not None and consumer.process.poll() is None:
                consumer.kill()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def consumer(self, client_id: str = "consumer-1", **env: str) -> "ConsumerProcess":
        consumer = ConsumerProcess(client_id=client_id, **{**self.values, **env})
        self.consumers.append(consumer)
        return consumer


class ConsumerProcess(WorkerProcess):
    """`manage.py run_ingest` against the test database; `wait_for` reads its log."""

    def __init__(self, *, client_id: str, **env: str):
        super().__init__(machine_api_url="", IOTHUB_MQTT_CLIENT_ID=client_id, LOG_FORMAT="text", **env)
        self.client_id = client_id

    def start(self) -> "ConsumerProcess":
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_ingest"],
            cwd=Path(__file__).resolve().parents[1],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for("subscribed to $share/")
        return self

    def retire(self, timeout: float = 60) -> None:
        """`run_ingest --retire` under this client id, to its end."""
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_ingest", "--retire"],
            cwd=Path(__file__).resolve().parents[1],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        assert self.process.wait(timeout) == 0, "\n".join(self.lines)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no acknowledgement sent after this instant."""
        self.process.kill()
        self.process.wait(10)


def telemetry(serial_number: str, **metrics: float) -> dict:
    return {"version": "0.0.1", "serial_number": serial_number, "metrics": metrics or {"vibration": 5.0}}


class DeviceClient:
    """A device on the broker: connects with its serial number and token (MQTT 5), publishes at
    QoS 1 and reads the broker's PUBACK reason code, collects what arrives on its subscriptions."""

    def __init__(self, broker: Broker, username: str, password: str, *, port: int | None = None, **tls):
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-{username}-{secrets.token_hex(3)}", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(**tls)
        self.host, self.port = "127.0.0.1", port or broker.port
        self.connack = queue.Queue()
        self.received: queue.Queue = queue.Queue()
        self.disconnected = threading.Event()
        self._acks: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        self.client.on_connect = lambda c, u, flags, code, props: self.connack.put(code)
        self.client.on_disconnect = lambda c, u, flags, code, props: self.disconnected.set()
        self.client.on_message = lambda c, u, message: self.received.put(message)
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda c, u, mid, codes, props: self._ack(mid).put(codes)

    def _ack(self, mid: int) -> queue.Queue:
        with self._lock:
            return self._acks.setdefault(mid, queue.Queue())

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._ack(mid).put(reason_code)

    def connect(self) -> mqtt.ReasonCode:
        """Connect and return the CONNACK's reason code (the connection stays open when it is a
        success; paho gives up after a refusal)."""
        self.client.connect(self.host, self.port, clean_start=True)
        self.client.loop_start()
        code = self.connack.get(timeout=10)
        if code.is_failure:
            self.close()
        return code

    def publish(self, body, *, topic: str | None = None, correlation: bytes | None = None) -> mqtt.ReasonCode:
        """Publish at QoS 1 and return the reason code of the broker's PUBACK."""
        properties = None
        if correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = correlation
        payload = body if isinstance(body, bytes) else orjson.dumps(body)
        topic = topic or f"devices/{self.client._username.decode()}/telemetry"
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        return self._ack(info.mid).get(timeout=10)

    def subscribe(self, topic: str) -> list:
        _, mid = self.client.subscribe(topic, qos=1)
        return self._ack(mid).get(timeout=10)

    def next_message(self, timeout: float = 10) -> tuple[str, dict, mqtt.MQTTMessage]:
        message = self.received.get(timeout=timeout)
        return message.topic, orjson.loads(message.payload), message

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(condition: Callable[[], object], timeout: float = 15, message: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"not true within {timeout} s: {condition}")
        time.sleep(0.05)


def payload_fingerprint(body: dict) -> str:
    return hashlib.sha256(orjson.dumps(body)).hexdigest()


# --- A TCP proxy that can hold back one direction ------------------------------------------------


def mqtt_packets(buffer: bytearray) -> list[bytes]:
    """Whole MQTT control packets taken off the front of `buffer` (fixed header: type byte, then the
    remaining length in 7-bit groups)."""
    packets = []
    while len(buffer) >= 2:
        length, multiplier, position = 0, 1, 1
        while True:
            if position >= len(buffer):
                return packets
            byte = buffer[position]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            position += 1
            if not byte & 0x80:
                break
        if len(buffer) < position + length:
            return packets
        packets.append(bytes(buffer[: position + length]))
        del buffer[: position + length]
    return packets


PUBACK = 0x40


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `drop_upstream(kind)` stops forwarding the client's
    MQTT packets of that type (e.g. PUBACK) from then on; `cut()` closes every connection and
    refuses new ones until `restore()`."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.dropped_types: set[int] = set()
        self.dropped = 0
        self._open = True
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_upstream(self, packet_type: int) -> None:
        self.dropped_types.add(packet_type)

    def cut(self) -> None:
        with self._lock:
            self._open = False
            for sock in self._connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._connections.clear()

    def restore(self) -> None:
        with self._lock:
            self._open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if not self._open:
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                except OSError:
                    client.close()
                    continue
                self._connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        pending = bytearray()
        sockets = [client, upstream]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is upstream:
                        client.sendall(data)
                    elif not self.dropped_types:
                        upstream.sendall(data)
                    else:
                        pending += data
                        for packet in mqtt_packets(pending):
                            if packet[0] & 0xF0 in self.dropped_types:
                                self.dropped += 1
                            else:
                                upstream.sendall(packet)
        except OSError:
            return
        finally:
            for sock in sockets:
                sock.close()

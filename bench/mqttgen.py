"""A lean MQTT load generator for bench/mqtt.py: raw sockets, one MQTT 3.1.1 connection per device
(its serial number and token), PUBLISH packets at QoS 1 built beforehand, PUBACKs read as they come.
Its own CPU time is reported, so that its share of the machine is known.

Message k goes to device k mod n; at a fixed rate it is due at start + k / rate (sent late if the
generator falls behind, and the lateness is reported), otherwise as fast as each connection's
window of unacknowledged messages allows.
"""

import selectors
import socket
import struct
import time
from dataclasses import dataclass, field

import orjson


def _varint(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    body = _string("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60)  # 3.1.1, user+password+clean
    body += _string(client_id) + _string(username) + _string(password)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, packet_id: int, payload: bytes) -> bytes:
    body = _string(topic) + struct.pack("!H", packet_id) + payload
    return b"\x32" + _varint(len(body)) + body  # PUBLISH, QoS 1


@dataclass
class _Connection:
    sock: socket.socket
    serial: str
    next_id: int = 1
    in_flight: dict[int, int] = field(default_factory=dict)  # packet id -> message seq
    buffer: bytearray = field(default_factory=bytearray)


@dataclass
class Results:
    sent_at: dict[int, float]  # seq -> time.monotonic() when written
    acked: set[int]  # seqs the broker acknowledged
    refused: int  # PUBACKs never came: connections closed by the broker
    cpu_seconds: float
    elapsed: float
    late: float  # at a fixed rate: how far behind schedule the last message was, seconds


def message(serial: str, seq: int) -> bytes:
    return orjson.dumps({"version": "0.0.1", "serial_number": serial, "metrics": {"vibration": 5.0, "seq": seq}})


def run(
    host: str,
    port: int,
    devices: list[tuple[str, str]],
    seqs: list[int],
    *,
    rate: float | None = None,
    window: int = 32,
    wait_acks: float = 60.0,
) -> Results:
    cpu_start, started_wall = time.process_time(), time.monotonic()
    selector = selectors.DefaultSelector()
    connections = []
    for number, (serial, token) in enumerate(devices):
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect_packet(f"bench-{number}-{time.monotonic_ns()}", serial, token))
        connack = sock.recv(4)
        if len(connack) < 4 or connack[3] != 0:
            raise ConnectionError(f"the broker refused {serial}: {connack!r}")
        sock.setblocking(False)
        connection = _Connection(sock, serial)
        connections.append(connection)
        selector.register(sock, selectors.EVENT_READ, connection)
    sent_at: dict[int, float] = {}
    acked: set[int] = set()
    start = time.monotonic()
    late = 0.0
    for k, seq in enumerate(seqs):
        connection = connections[k % len(connections)]
        if rate is not None:
            due = start + k / rate
            while (now := time.monotonic()) < due:
                _read(selector, acked, timeout=due - now)
            late = max(late, time.monotonic() - due)
        while len(connection.in_flight) >= window:
            _read(selector, acked, timeout=0.05)
        packet_id = connection.next_id
        connection.next_id = packet_id % 65535 + 1
        connection.in_flight[packet_id] = seq
        packet = publish_packet(f"devices/{connection.serial}/telemetry", packet_id, message(connection.serial, seq))
        connection.sock.setblocking(True)
        connection.sock.sendall(packet)
        connection.sock.setblocking(False)
        sent_at[seq] = time.monotonic()
        if k % 64 == 0:
            _read(selector, acked, timeout=0)
    deadline = time.monotonic() + wait_acks
    while any(c.in_flight for c in connections) and time.monotonic() < deadline:
        _read(selector, acked, timeout=0.1)
    refused = sum(len(c.in_flight) for c in connections)
    for connection in connections:
        connection.sock.close()
    return Results(sent_at, acked, refused, time.process_time() - cpu_start, time.monotonic() - started_wall, late)


def _read(selector: selectors.BaseSelector, acked: set[int], timeout: float) -> None:
    for key, _ in selector.select(timeout):
        connection: _Connection = key.data
        try:
            data = connection.sock.recv(65536)
        except BlockingIOError:
            continue
        if not data:
            selector.unregister(connection.sock)
            continue
        connection.buffer += data
        while len(connection.buffer) >= 4 and connection.buffer[0] == 0x40:  # PUBACK, remaining length 2
            packet_id = struct.unpack("!H", connection.buffer[2:4])[0]
            del connection.buffer[:4]
            seq = connection.in_flight.pop(packet_id, None)
            if seq is not None:
                acked.add(seq)

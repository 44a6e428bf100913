"""A stand-in for the plant's machine API: a real HTTP server on loopback, in a thread, that
records every call and answers as a test tells it (status, delay)."""

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORTS = range(8200, 8300)


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: dict
    received_at: float


@dataclass
class MachineApi:
    status: int = 200
    delay: float = 0.0  # seconds before answering
    body: str = '{"stopped": true}'
    calls: list[Call] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)
        self.received.set()

    def paths(self) -> list[str]:
        with self._lock:
            return [c.path for c in self.calls]


def serve(api: MachineApi) -> tuple[ThreadingHTTPServer, threading.Thread]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            api.record(
                Call(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw) if raw else {},
                    received_at=time.monotonic(),
                )
            )
            if api.delay:
                time.sleep(api.delay)
            payload = api.body.encode()
            try:
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout) before the answer

        def log_message(self, format, *args):
            pass

    ThreadingHTTPServer.daemon_threads = True
    for port in PORTS:
        try:
            server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError:
            continue
        break
    else:
        raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread

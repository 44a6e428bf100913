"""Real servers on loopback for the notification tests: an SMTP server (aiosmtpd), an SMS gateway
speaking Twilio's Messages API, and a webhook receiver that verifies every request with the
Standard Webhooks reference library. Each records what it received."""

import base64
import contextlib
import json
import logging
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from standardwebhooks import Webhook, WebhookVerificationError

# aiosmtpd logs every SMTP command at INFO.
logging.getLogger("mail.log").setLevel(logging.WARNING)

HTTP_PORTS = range(8300, 8400)
SMTP_PORTS = range(2525, 2600)


def _bind_http(handler_class) -> "_Server":
    """An HTTP server on the first free port of the range given to this project's tests."""
    for port in HTTP_PORTS:
        try:
            return _Server(("127.0.0.1", port), handler_class)
        except OSError:
            continue
    raise RuntimeError("no free port in 8300-8399")


class _Server(ThreadingHTTPServer):
    """Closes its open keep-alive connections when stopped: a client's pooled connection must not
    keep talking to a stopped server's handler thread."""

    daemon_threads = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.open_connections: set[socket.socket] = set()
        self.connections_accepted = 0

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        for connection in list(self.open_connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, as real receivers do; every answer carries a Content-Length.
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.server.open_connections.add(self.connection)
        self.server.connections_accepted += 1

    def finish(self):
        self.server.open_connections.discard(self.connection)
        super().finish()

    def log_message(self, format, *args):
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _answer(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class ReceivedWebhook:
    at: float
    path: str
    headers: dict
    body: bytes
    verified: bool
    error: str | None
    status: int

    @property
    def payload(self) -> dict:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Answers 200 unless scripted otherwise: `script` holds the statuses of the next requests
    (an int, or (status, headers)); `default` answers the rest."""

    secret: str
    received: list[ReceivedWebhook] = field(default_factory=list)
    script: deque = field(default_factory=deque)
    default: int = 200
    delay: float = 0.0
    # Requests that have arrived; `received` holds those answered.
    arrived: int = 0
    most_in_flight: int = 0
    server: "_Server | None" = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def start(self) -> "WebhookReceiver":
        receiver = self
        verifier = Webhook(self.secret)

        class Handler(_Handler):
            def do_POST(self):
                with receiver.lock:
                    receiver.arrived += 1
                    in_flight = receiver.arrived - len(receiver.received)
                    receiver.most_in_flight = max(receiver.most_in_flight, in_flight)
                body = self._body()
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    verifier.verify(body, headers)
                    verified, error = True, None
                except WebhookVerificationError as exc:
                    verified, error = False, str(exc)
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    scripted = receiver.script.popleft() if receiver.script else receiver.default
                    status, extra = scripted if isinstance(scripted, tuple) else (scripted, {})
                    if not verified:
                        status = 401
                    receiver.received.append(
                        ReceivedWebhook(time.monotonic(), self.path, headers, body, verified, error, status)
                    )
                self._answer(status, b"ok" if status < 300 else b"nope", extra)

        self.server = _bind_http(Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.stop()


@dataclass
class SmsGateway:
    """Twilio's Messages API, as far as the hub uses it: form POST to
    /2010-04-01/Accounts/{sid}/Messages.json with basic auth; 201 and a message resource."""

    account_sid: str
    auth_token: str
    received: list[dict] = field(default_factory=list)
    server: "_Server | None" = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "SmsGateway":
        gateway = self

        class Handler(_Handler):
            def do_POST(self):
                body = self._body()
                expected = "Basic " + base64.b64encode(f"{gateway.account_sid}:{gateway.auth_token}".encode()).decode()
                if self.headers.get("authorization") != expected:
                    error = {"code": 20003, "message": "Authenticate", "status": 401}
                    return self._answer(401, json.dumps(error).encode(), {"content-type": "application/json"})
                if self.path != f"/2010-04-01/Accounts/{gateway.account_sid}/Messages.json":
                    return self._answer(404, b"{}", {"content-type": "application/json"})
                form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
                gateway.received.append({"content_type": self.headers.get("content-type"), **form})
                resource = {"sid": f"SM{len(gateway.received):032d}", "status": "queued", **form}
                self._answer(201, json.dumps(resource).encode(), {"content-type": "application/json"})

        self.server = _bind_http(Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.stop()


class _SmtpHandler:
    def __init__(self, inbox: list):
        self.inbox = inbox

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.inbox.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on loopback; `inbox` holds (envelope sender, envelope recipients, message)."""

    def __init__(self):
        self.inbox: list[tuple[str, list[str], EmailMessage]] = []
        self.controller: Controller | None = None

    def start(self) -> "SmtpServer":
        for port in SMTP_PORTS:
            controller = Controller(_SmtpHandler(self.inbox), hostname="127.0.0.1", port=port)
            try:
                controller.start()
            except Exception:  # noqa: S112 - the port is taken; aiosmtpd reports it in several ways
                continue
            self.controller = controller
            self.port = port
            return self
        raise RuntimeError("no free port in 2525-2599")

    def stop(self) -> None:
        self.controller.stop()

"""The webhook channel: a JSON POST of the event, signed the Standard Webhooks way.

- Headers `webhook-id` (the delivery's idempotency key, the same on every retry),
  `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`
  (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), signed with IOTHUB_WEBHOOK_SECRET by the
  `standardwebhooks` reference library.
- A 2xx answer is success; anything else, a redirect included (3xx is not followed), a timeout
  (IOTHUB_WEBHOOK_TIMEOUT_SECONDS, 15 s) or a connection error is a failure the queue retries.
- Private, loopback, link-local and other non-public addresses are refused unless
  IOTHUB_WEBHOOK_ALLOW_PRIVATE is true. The check sits where the connection is made: the host
  name is resolved once, every address is checked, and the socket connects to a checked address,
  so a name that resolves to a public address when the template is saved and to an internal one
  later (DNS rebinding) still cannot reach inside. Environment proxies are not used, since a
  proxy would make the connection on our behalf, out of the check's sight.
"""

import ipaddress
import json
import socket
import threading
from datetime import UTC, datetime

import httpcore
import httpx
from django.conf import settings
from standardwebhooks import Webhook

from iothub.notifications.channels.base import DeliveryError, OutgoingMessage
from iothub.recipients import ip_is_public

USER_AGENT = "IoT-Hub-Alpha-Webhooks/1"


class AddressRefused(Exception):
    """The webhook's host resolves only to addresses it may not reach."""


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore's own socket backend, with the address check in front of every connect."""

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        # Scope ids (`fe80::1%eth0`) are not part of the address proper.
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        if not settings.IOTHUB_WEBHOOK_ALLOW_PRIVATE:
            allowed = [address for address in addresses if ip_is_public(address)]
            if not allowed:
                shown = ", ".join(str(address) for address in addresses)
                raise AddressRefused(
                    f"{host} resolves to {shown}, a private, loopback or link-local address; webhooks may reach "
                    "it only when IOTHUB_WEBHOOK_ALLOW_PRIVATE=true"
                )
            addresses = allowed
        error: Exception | None = None
        for address in addresses:
            try:
                # Connect to the checked address itself; TLS still verifies the certificate for
                # `host`, since httpcore takes the server name from the URL, not from the socket.
                return super().connect_tcp(str(address), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        raise error or httpcore.ConnectError(f"no address for {host}")


class _GuardedTransport(httpx.HTTPTransport):
    """httpx's transport (request conversion, error mapping), over a pool that connects through
    `_GuardedBackend`. httpx does not take a network backend as an argument, so the pool it built
    is replaced; the pinned httpx version keeps `_pool` as the attribute it sends through."""

    def __init__(self, *, max_connections: int):
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(),
        )


_client: httpx.Client | None = None
_client_lock = threading.Lock()


def _http() -> httpx.Client:
    """One client per process, shared by the sending threads, keeping connections to receivers
    alive between deliveries."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(
                transport=_GuardedTransport(max_connections=max(10, 2 * settings.IOTHUB_NOTIFICATION_CONCURRENCY)),
                follow_redirects=False,
                trust_env=False,
                headers={"user-agent": USER_AGENT},
            )
        return _client


_signers: dict[str, Webhook] = {}


def _signer() -> Webhook:
    secret = settings.IOTHUB_WEBHOOK_SECRET
    if secret not in _signers:
        if not secret.startswith("whsec_"):
            raise DeliveryError(
                "IOTHUB_WEBHOOK_SECRET is not set (or lacks the whsec_ prefix); webhooks are never sent unsigned",
                permanent=True,
            )
        try:
            _signers[secret] = Webhook(secret)
        except Exception:
            raise DeliveryError("IOTHUB_WEBHOOK_SECRET is not whsec_ followed by base64", permanent=True) from None
    return _signers[secret]


def signed_headers(*, msg_id: str, body: str, at: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt."""
    at = at or datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": _signer().sign(msg_id=msg_id, timestamp=at, data=body),
    }


# An answer is read up to this many bytes. Reading it to its end is what lets the connection go
# back to the pool for the next delivery (an answer left unread closes it); a receiver that sends
# more has its connection closed instead.
MAX_ANSWER_BYTES = 64 * 1024


def _read_some(response: httpx.Response) -> bytes:
    read = b""
    for chunk in response.iter_raw():
        read += chunk
        if len(read) > MAX_ANSWER_BYTES:
            break
    return read


def send(message: OutgoingMessage) -> None:
    body = json.dumps(message.payload, separators=(",", ":"), ensure_ascii=False)
    headers = signed_headers(msg_id=message.idempotency_key, body=body)
    timeout = settings.IOTHUB_WEBHOOK_TIMEOUT_SECONDS
    try:
        # Streamed, so that a receiver's answer is read only up to a bound.
        with _http().stream(
            "POST", message.address, content=body.encode(), headers=headers, timeout=timeout
        ) as response:
            excerpt = _read_some(response)
            status = response.status_code
            if 200 <= status < 300:
                return
            if 300 <= status < 400:
                location = response.headers.get("location", "?")
                raise DeliveryError(f"receiver answered {status} (redirect to {location}); redirects are not followed")
            detail = excerpt[:200].decode(errors="replace").strip()
            raise DeliveryError(f"receiver answered {status}" + (f": {detail}" if detail else ""))
    except AddressRefused as exc:
        raise DeliveryError(str(exc), permanent=True) from None
    except httpx.TimeoutException:
        raise DeliveryError(f"receiver did not answer within {timeout} s") from None
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from None

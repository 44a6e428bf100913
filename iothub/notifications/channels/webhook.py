"""The webhook channel: a JSON POST of the event, signed the Standard Webhooks way.

- Headers `webhook-id` (the delivery's idempotency key, the same on every retry),
  `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`
  (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), signed with IOTHUB_WEBHOOK_SECRET by the
  `standardwebhooks` reference library.
- A 2xx answer is success; anything else, a redirect included (3xx is not followed), a timeout
  (IOTHUB_WEBHOOK_TIMEOUT_SECONDS, 15 s) or a connection error is a failure the queue retries.
- Private, loopback, link-local and other non-public addresses are refused unless
  IOTHUB_WEBHOOK_ALLOW_PRIVATE is true. The check sits where the connection is made: the session's
  resolver resolves the host name once per connection and hands the connector only the addresses
  that pass, so a name that resolves to a public address when the template is saved and to an
  internal one later (DNS rebinding) still cannot reach inside; an address written in the URL
  itself is checked before the request. Environment proxies are not used, since a proxy would make
  the connection on our behalf, out of the check's sight.

The channel is a coroutine on aiohttp's client: the worker's engine keeps many webhooks in flight
on one event loop, and aiohttp costs a sixth of the CPU per request of httpx on threads
(docs/performance.md). One session per worker (`session_open` / `session_close`, called by the
delivery outbox), keeping connections to receivers alive between deliveries.
"""

import ipaddress
import json
import socket
from datetime import UTC, datetime

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings
from standardwebhooks import Webhook
from yarl import URL

from iothub.notifications.channels.base import DeliveryError, OutgoingMessage
from iothub.recipients import ip_is_public

USER_AGENT = "IoT-Hub-Alpha-Webhooks/1"


class AddressRefused(Exception):
    """The webhook's host resolves only to addresses it may not reach."""


def _refusal(host: str, addresses: list) -> AddressRefused:
    shown = ", ".join(str(address) for address in addresses)
    return AddressRefused(
        f"{host} resolves to {shown}, a private, loopback or link-local address; webhooks may reach "
        "it only when IOTHUB_WEBHOOK_ALLOW_PRIVATE=true"
    )


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # Scope ids (`fe80::1%eth0`) are not part of the address proper.
    return ipaddress.ip_address(text.split("%")[0])


class _GuardedResolver(AbstractResolver):
    """aiohttp's threaded resolver (getaddrinfo), keeping only the addresses a webhook may reach."""

    def __init__(self):
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        results: list[ResolveResult] = await self._resolver.resolve(host, port, family)
        if settings.IOTHUB_WEBHOOK_ALLOW_PRIVATE:
            return results
        allowed = [result for result in results if ip_is_public(_address(result["host"]))]
        if not allowed:
            raise _refusal(host, list(dict.fromkeys(_address(result["host"]) for result in results)))
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


def _check_literal(url: str) -> None:
    """An address written in the URL never reaches the resolver: checked here instead."""
    host = URL(url).host or ""
    try:
        address = _address(host)
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    if not settings.IOTHUB_WEBHOOK_ALLOW_PRIVATE and not ip_is_public(address):
        raise _refusal(host, [address])


_session: aiohttp.ClientSession | None = None


async def session_open(*, connections: int) -> None:
    """The worker's session: up to `connections` connections in all, kept alive between sends."""
    global _session
    await session_close()
    _session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            resolver=_GuardedResolver(), use_dns_cache=False, limit=connections, keepalive_timeout=5.0
        ),
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


async def session_close() -> None:
    global _session
    if _session is not None:
        session, _session = _session, None
        await session.close()


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
# back to the pool for the next delivery; a receiver that sends more has its connection closed.
MAX_ANSWER_BYTES = 64 * 1024


async def send(message: OutgoingMessage) -> None:
    if _session is None:
        raise RuntimeError("the webhook session is not open (session_open)")
    body = json.dumps(message.payload, separators=(",", ":"), ensure_ascii=False)
    headers = signed_headers(msg_id=message.idempotency_key, body=body)
    timeout = settings.IOTHUB_WEBHOOK_TIMEOUT_SECONDS
    try:
        _check_literal(message.address)
        async with _session.post(
            message.address,
            data=body.encode(),
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            excerpt = b""
            while len(excerpt) <= MAX_ANSWER_BYTES:
                chunk = await response.content.read(MAX_ANSWER_BYTES + 1 - len(excerpt))
                if not chunk:
                    break
                excerpt += chunk
            else:
                response.close()
            status = response.status
            if 200 <= status < 300:
                return
            if 300 <= status < 400:
                location = response.headers.get("location", "?")
                raise DeliveryError(f"receiver answered {status} (redirect to {location}); redirects are not followed")
            detail = excerpt[:200].decode(errors="replace").strip()
            raise DeliveryError(f"receiver answered {status}" + (f": {detail}" if detail else ""))
    except AddressRefused as exc:
        raise DeliveryError(str(exc), permanent=True) from None
    except TimeoutError:
        raise DeliveryError(f"receiver did not answer within {timeout} s") from None
    except (aiohttp.ClientError, ValueError) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from None

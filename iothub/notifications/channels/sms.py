"""The SMS channel: an HTTP gateway. The first (and so far only) adapter speaks Twilio's Messages
API: a form POST of `To`, `From` and `Body` to `{IOTHUB_SMS_API_URL}/2010-04-01/Accounts/{sid}/
Messages.json` with HTTP basic auth (account SID, auth token). Any gateway that speaks the same
interface works by pointing IOTHUB_SMS_API_URL at it.
"""

import threading

import httpx
from django.conf import settings

from iothub.notifications.channels.base import DeliveryError, OutgoingMessage

# Twilio refuses bodies over 1,600 characters; cut rather than fail every retry.
MAX_BODY_LENGTH = 1600

_client: httpx.Client | None = None
_client_lock = threading.Lock()


def _http() -> httpx.Client:
    """One client per process, shared by the sending threads (httpx clients are thread-safe), so
    connections to the gateway are reused."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(follow_redirects=False)
        return _client


def _twilio_error(response: httpx.Response) -> str:
    """Twilio's error body is JSON with `code` and `message`; other gateways may say anything."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(data, dict) and "message" in data:
        return f"{data.get('code', '')} {data['message']}".strip()
    return response.text[:200]


def _send_twilio(message: OutgoingMessage) -> None:
    sid, token, sender = settings.IOTHUB_SMS_ACCOUNT_SID, settings.IOTHUB_SMS_AUTH_TOKEN, settings.IOTHUB_SMS_FROM
    if not (sid and token and sender):
        raise DeliveryError(
            "SMS is not configured: set IOTHUB_SMS_ACCOUNT_SID, IOTHUB_SMS_AUTH_TOKEN and IOTHUB_SMS_FROM",
            permanent=True,
        )
    body = message.text if len(message.text) <= MAX_BODY_LENGTH else message.text[: MAX_BODY_LENGTH - 1] + "…"
    url = f"{settings.IOTHUB_SMS_API_URL}/2010-04-01/Accounts/{sid}/Messages.json"
    try:
        response = _http().post(
            url,
            data={"To": message.address, "From": sender, "Body": body},
            auth=(sid, token),
            timeout=settings.IOTHUB_SMS_TIMEOUT_SECONDS,
        )
    except httpx.TimeoutException:
        raise DeliveryError(f"SMS gateway timed out after {settings.IOTHUB_SMS_TIMEOUT_SECONDS} s") from None
    except httpx.HTTPError as exc:
        raise DeliveryError(f"SMS gateway unreachable: {type(exc).__name__}: {exc}") from None
    if response.status_code not in (200, 201):
        raise DeliveryError(f"SMS gateway answered {response.status_code}: {_twilio_error(response)}")


_PROVIDERS = {"twilio": _send_twilio}


def send(message: OutgoingMessage) -> None:
    provider = _PROVIDERS.get(settings.IOTHUB_SMS_PROVIDER)
    if provider is None:
        raise DeliveryError(
            f"unknown SMS provider {settings.IOTHUB_SMS_PROVIDER!r}; known: {', '.join(_PROVIDERS)}", permanent=True
        )
    provider(message)

"""The plant's machine-control API, as the hub calls it: `POST {base}/machines/{machine_id}/stop`.

The event id travels as the `Idempotency-Key` header, the same on every retry, so a machine API
that honours it stops a machine once however often the hub had to ask. Called only by the worker,
never inside a request or the ingest transaction.
"""

from urllib.parse import quote

import httpx
from django.conf import settings

from iothub.outbox import SendFailed

USER_AGENT = "iothub-alpha"
TIMEOUT_ERROR = "API timeout"  # the spec's wording in execution_results


class MachineApiError(SendFailed):
    """The call did not succeed. `retryable` says whether asking again may help."""

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message, permanent=not retryable)
        self.retryable = retryable


def machine_stop_url(*, machine_id: str) -> str:
    base = settings.IOTHUB_MACHINE_API_URL.rstrip("/")
    # The id is a path segment: quoted whole, so `A/B` cannot reach another endpoint.
    return f"{base}/machines/{quote(machine_id, safe='')}/stop"


def machine_stop(*, machine_id: str, idempotency_key: str, reason: str) -> None:
    """Ask the machine API to stop a machine; return on a 2xx answer, else raise MachineApiError.

    A timeout, a connection failure, a 5xx, 408 or 429 is retryable; any other 4xx is not (the
    request itself is wrong, e.g. an unknown machine, and will stay wrong).
    """
    if not settings.IOTHUB_MACHINE_API_URL:
        raise MachineApiError("IOTHUB_MACHINE_API_URL is not set", retryable=True)
    headers = {"Idempotency-Key": idempotency_key, "User-Agent": USER_AGENT}
    if settings.IOTHUB_MACHINE_API_TOKEN:
        headers["Authorization"] = f"Bearer {settings.IOTHUB_MACHINE_API_TOKEN}"
    try:
        response = httpx.post(
            machine_stop_url(machine_id=machine_id),
            json={"machine_id": machine_id, "event_id": idempotency_key, "reason": reason},
            headers=headers,
            timeout=settings.IOTHUB_MACHINE_API_TIMEOUT_SECONDS,
            follow_redirects=False,
        )
    except httpx.TimeoutException:
        raise MachineApiError(TIMEOUT_ERROR, retryable=True) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise MachineApiError(f"API unreachable: {exc}", retryable=True) from None
    if response.is_success:
        return
    status = response.status_code
    detail = f"API answered {status} {response.reason_phrase}".rstrip()
    body = response.text.strip()
    if body:
        detail += f": {body[:200]}"
    raise MachineApiError(detail, retryable=status >= 500 or status in (408, 429))

"""The lean ingest door: `POST /api/v1/telemetry/` as a plain ASGI app, without Django's request
stack, which was the floor of the cost of a message (docs/performance.md).

It does what the Django view does (`iothub.api.ingest`, whose functions it calls: the same
credential check, body refusals, idempotency keys, answers and counters), reads the body without
holding a thread (a client sending slowly costs a socket, not a worker), and awaits the batched
writer, which answers after the commit.
"""

import asyncio
import logging
import time
import uuid

from django.conf import settings
from django.utils import timezone

from iothub import metrics
from iothub.api.ingest import (
    Answer,
    answer_for,
    body_cap,
    body_refusal,
    body_too_large,
    credential_parse,
    internal_error_answer,
    request_build,
)
from iothub.ingest.validation import FieldError, IngestRejected
from iothub.ingest.writer import IngestWriter, ingest_writer
from iothub.monitoring.middleware import INGEST_VIEW, REQUEST_ID, request_logged

logger = logging.getLogger(__name__)

PATH = "/api/v1/telemetry/"


class ClientGone(Exception):
    """The client disconnected before its body arrived: there is no one to answer."""


async def body_read(receive, *, cap: int, timeout: float) -> bytes | IngestRejected:
    """The request body, at most `cap` bytes (else the 413 refusal, without reading the rest),
    within `timeout` seconds (else a 408 refusal). Chunked bodies arrive the same way: the server
    has decoded the chunks."""
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > cap:
                    return body_too_large()
                parts.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(parts)
    except TimeoutError:
        return IngestRejected(408, [FieldError("body", f"was not received within {timeout:g} s")])


def header_values(scope) -> dict[str, str]:
    """The request's headers by lower-case name (a repeated header's values joined by commas)."""
    values: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        values[name] = f"{values[name]},{value}" if name in values else value
    return values


class IngestDoor:
    def __init__(self, writer: IngestWriter | None = None):
        self._writer = writer

    @property
    def writer(self) -> IngestWriter:
        return self._writer or ingest_writer()

    async def __call__(self, scope, receive, send) -> None:
        started = time.perf_counter()
        headers = header_values(scope)
        offered = headers.get("x-request-id", "")
        request_id = offered if REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        try:
            answer = await self._answer(headers, receive)
        except ClientGone:
            return
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer.body)).encode()),
                    (b"x-request-id", request_id.encode()),
                    *((name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})
        seconds = time.perf_counter() - started
        metrics.ingest_observe(status=answer.status, messages=answer.messages, seconds=seconds)
        request_logged(
            request_id=request_id,
            method="POST",
            path=PATH,
            view=INGEST_VIEW,
            status=answer.status,
            seconds=seconds,
            device_id=answer.device_id,
            remote_addr=(scope.get("client") or (None,))[0],
        )

    async def _answer(self, headers: dict[str, str], receive) -> Answer:
        token = credential_parse(headers.get("authorization"))
        if isinstance(token, Answer):
            return token
        body = body_refusal(content_type=headers.get("content-type"), content_length=headers.get("content-length"))
        if body is None:
            body = await body_read(receive, cap=body_cap(), timeout=settings.IOTHUB_HTTP_BODY_TIMEOUT_SECONDS)
        request = request_build(
            token=token,
            body=body,
            idempotency_key=headers.get("idempotency-key"),
            received_at=timezone.now(),
        )
        try:
            outcome = await self.writer.submit_async(request)
        except Exception:
            # The writer logged the failure with its traceback.
            return internal_error_answer()
        return answer_for(outcome, messages=request.message_count)

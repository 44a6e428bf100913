"""ASGI entry point: the whole hub on one port, as gunicorn serves it (`gunicorn.conf.py`).

    POST /api/v1/telemetry/  ─▶ the lean ingest door (iothub.api.ingest_door), on the event loop
    everything else          ─▶ Django, whole: the request body is first read on the event loop
                                (at most IOTHUB_HTTP_MAX_BODY_BYTES, within
                                IOTHUB_HTTP_BODY_TIMEOUT_SECONDS), then the WSGI app runs on one of
                                IOTHUB_THREADS threads (a2wsgi)

so a client that sends slowly, or not at all, holds a socket and never a thread: the threads only
ever run requests that have fully arrived (docs/deployment.md). Django runs as WSGI, not through its
own ASGI handler, because that handler reads a streaming response (the CSV export) into memory
before sending it.
"""

import asyncio
import contextlib
import os

import orjson
from a2wsgi import WSGIMiddleware
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iothub.settings")
# Loads the apps, which the hub's own modules below need.
django_wsgi = get_wsgi_application()

from django.conf import settings  # noqa: E402

from iothub.api.ingest_door import PATH as INGEST_PATH  # noqa: E402
from iothub.api.ingest_door import ClientGone, IngestDoor, body_read  # noqa: E402
from iothub.ingest.validation import IngestRejected  # noqa: E402
from iothub.ingest.writer import ingest_writer  # noqa: E402


class BufferedDjango:
    """Django's WSGI app behind a2wsgi, given each request only once its body has arrived."""

    def __init__(self, wsgi_app, *, threads: int):
        self.inner = WSGIMiddleware(wsgi_app, workers=threads)

    async def __call__(self, scope, receive, send) -> None:
        body = await body_read(
            receive, cap=settings.IOTHUB_HTTP_MAX_BODY_BYTES, timeout=settings.IOTHUB_HTTP_BODY_TIMEOUT_SECONDS
        )
        if isinstance(body, IngestRejected):
            await _refuse(send, body)
            return
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        # The body is whole now: Django reads it by its length (a chunked upload had none).
        headers = [(n, v) for n, v in scope["headers"] if n not in (b"content-length", b"transfer-encoding")]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.inner({**scope, "headers": headers}, replay, send)


async def _refuse(send, rejected: IngestRejected) -> None:
    body = orjson.dumps(rejected.as_dict())
    await send(
        {
            "type": "http.response.start",
            "status": rejected.status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Hub:
    def __init__(self):
        self.door = IngestDoor()
        self.django = BufferedDjango(django_wsgi, threads=settings.IOTHUB_THREADS)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            handler = self.door if scope["method"] == "POST" and scope["path"] == INGEST_PATH else self.django
            with contextlib.suppress(ClientGone):  # nobody to answer
                await handler(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:  # websocket: the hub has none
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # Requests in flight have been answered; store what is still queued, then stop.
                await asyncio.to_thread(ingest_writer().stop)
                await send({"type": "lifespan.shutdown.complete"})
                return


application = Hub()

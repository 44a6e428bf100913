"""One log line per HTTP request, with ids, and the request counter.

Outermost middleware, so that it times and sees every answer (static files and refusals
included). It never touches the database: the user and the device are taken only when
authentication already loaded them (DRF puts them on the request), never loaded for the log.
A request id comes from the client's `X-Request-ID` (when sane) or is made here, and is sent
back in the reply's `X-Request-ID`, so that a client's report can be found in the log.
"""

import logging
import re
import time
import uuid

from django.conf import settings
from django.utils.functional import SimpleLazyObject, empty

from iothub import metrics

logger = logging.getLogger("iothub.request")

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_STATIC_PREFIX = "/" + settings.STATIC_URL.strip("/") + "/"
INGEST_VIEW = "telemetry-ingest"  # the ingest route's name (both doors)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _loaded_user_id(request) -> int | None:
    user = request.__dict__.get("user")
    if user is None or (isinstance(user, SimpleLazyObject) and user._wrapped is empty):
        return None
    return getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None


class RequestLogMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        offered = request.headers.get("X-Request-ID", "")
        request_id = offered if REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        request.request_id = request_id
        response = self.get_response(request)
        seconds = time.perf_counter() - started
        response["X-Request-ID"] = request_id

        match = getattr(request, "resolver_match", None)
        if match is not None:
            view = match.view_name
        else:  # WhiteNoise answers static files before any URL is resolved
            view = "static" if request.path.startswith(_STATIC_PREFIX) else "unmatched"
        method = request.method if request.method in _METHODS else "OTHER"
        request_logged(
            request_id=request_id,
            method=method,
            path=request.path,
            view=view,
            status=response.status_code,
            seconds=seconds,
            # The ingest view names the sending device once the writer has found it.
            device_id=getattr(request, "device_id", None),
            user_id=_loaded_user_id(request),
            remote_addr=request.META.get("REMOTE_ADDR"),
        )
        return response


def request_logged(
    *,
    request_id: str,
    method: str,
    path: str,
    view: str,
    status: int,
    seconds: float,
    device_id=None,
    user_id: int | None = None,
    remote_addr: str | None = None,
) -> None:
    """Count a request and write its log line: for Django's requests (above) and for the ingest
    door's, which Django does not see. A stored ingest request is logged at DEBUG: at thousands a
    second its line was the largest part of the request's cost, and a flood; it is counted
    (`iothub_readings_accepted`, the latency histogram) and the device's `last_seen` says it reports.
    Every refusal is logged at INFO."""
    metrics.http_request_answered(view=view, method=method, status=status)
    level = logging.DEBUG if view == INGEST_VIEW and status == 201 else logging.INFO
    if logger.isEnabledFor(level):
        duration_ms = round(seconds * 1000, 2)
        logger.log(
            level,
            "%s %s %s %.1fms",
            method,
            path,
            status,
            duration_ms,
            extra={
                "request_id": request_id,
                "method": method,
                "path": path,
                "view": view,
                "status": status,
                "duration_ms": duration_ms,
                "user_id": user_id,
                "device_id": str(device_id) if device_id else None,
                "remote_addr": remote_addr,
            },
        )

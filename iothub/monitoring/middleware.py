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

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_STATIC_PREFIX = "/" + settings.STATIC_URL.strip("/") + "/"
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
        request_id = offered if _REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        request.request_id = request_id
        response = self.get_response(request)
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        response["X-Request-ID"] = request_id

        match = getattr(request, "resolver_match", None)
        if match is not None:
            view = match.view_name
        else:  # WhiteNoise answers static files before any URL is resolved
            view = "static" if request.path.startswith(_STATIC_PREFIX) else "unmatched"
        method = request.method if request.method in _METHODS else "OTHER"
        metrics.http_request_answered(view=view, method=method, status=response.status_code)
        if logger.isEnabledFor(logging.INFO):
            auth = request.__dict__.get("auth")
            device_id = getattr(auth, "id", None) if hasattr(auth, "serial_number") else None
            logger.info(
                "%s %s %s %.1fms",
                method,
                request.path,
                response.status_code,
                duration_ms,
                extra={
                    "request_id": request_id,
                    "method": method,
                    "path": request.path,
                    "view": view,
                    "status": response.status_code,
                    "duration_ms": duration_ms,
                    "user_id": _loaded_user_id(request),
                    "device_id": str(device_id) if device_id else None,
                    "remote_addr": request.META.get("REMOTE_ADDR"),
                },
            )
        return response

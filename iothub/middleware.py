"""Middleware of the whole site: while the database is unreachable, a 503 that says when to retry.

Any view (the API, the ingest endpoint, the dashboard, the admin) that fails because the database
cannot be reached answers 503 with `Retry-After`, instead of a 500: the request was not wrong, and
the same request can succeed once the database is back. API paths get the API's JSON error shape
(`iothub.db.DATABASE_UNAVAILABLE`, shared with every other door of the hub); pages get an HTML page
that reloads itself after the same delay. Which errors count as "unreachable" is decided in one
place, `iothub.db.database_unavailable`; every other error is left to Django as before.
"""

import logging

from django.http import HttpResponse
from django.template.loader import render_to_string

from iothub.db import DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS, database_unavailable

logger = logging.getLogger(__name__)

# The REST API's URLs (iothub/api/urls.py): its clients read JSON, not pages.
API_PREFIX = "/api/"


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not database_unavailable(exception):
            return None
        # One line, no traceback: while the database is down every request would log the same one.
        reason = (str(exception).strip().splitlines() or [type(exception).__name__])[0]
        logger.warning("database unreachable, %s %s answered 503: %s", request.method, request.path, reason)
        if request.path.startswith(API_PREFIX):
            return HttpResponse(
                DATABASE_UNAVAILABLE.body, status=DATABASE_UNAVAILABLE.status, headers=DATABASE_UNAVAILABLE.headers
            )
        # Rendered without the request: its context processors would read the session and the
        # user, from the database that is not there.
        page = render_to_string("503.html", {"retry_after": RETRY_AFTER_SECONDS})
        return HttpResponse(page, status=DATABASE_UNAVAILABLE.status, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

"""One error shape for the API: DRF's (`{"field": ["message"]}` or `{"detail": "message"}`), never a
bare list, and JSON also for what Django answers itself under /api/ (no route: 404; a crash: 500).

On top of DRF's own handling: a service's Django `ValidationError` is a 400 naming its fields, a
database conflict (a protected row, or a constraint a concurrent request won the race for) is a 409
saying what conflicted, and a row that vanished under a request (deleted between the request's
read and its write, by a concurrent DELETE) is a 404 rather than a 500.
"""

from collections import Counter

from django.core.exceptions import ObjectDoesNotExist, ObjectNotUpdated
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError, RestrictedError
from django.http import JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.exceptions import server_error as drf_server_error
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback


def integrity_detail(exc: IntegrityError) -> str:
    """PostgreSQL's detail of a refused write, naming the column and value ("Key (serial_number)=(X)
    already exists."), or "" when it gave none."""
    diag = getattr(exc.__cause__, "diag", None)
    return (diag.message_detail or "") if diag is not None else ""


def exception_handler(exc, context):
    if isinstance(exc, (ProtectedError, RestrictedError)):
        counts = Counter(obj._meta for obj in getattr(exc, "protected_objects", ()))
        referrers = sorted(
            f"{n} {meta.verbose_name if n == 1 else meta.verbose_name_plural}" for meta, n in counts.items()
        )
        detail = f"Cannot delete: it is still referred to by {', '.join(referrers) or 'other records'}."
        set_rollback()
        return Response({"detail": detail}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, IntegrityError):
        detail = f"The change conflicts with existing data and was not saved. {integrity_detail(exc)}".strip()
        set_rollback()
        return Response({"detail": detail}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, ObjectDoesNotExist):
        exc = exceptions.NotFound()
    elif isinstance(exc, ObjectNotUpdated):
        # An update that found no row: the row was deleted after this request read it.
        set_rollback()
        exc = exceptions.NotFound("It was deleted while this request was being handled.")
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, list):
        # A validation error not tied to a field: named as DRF names the body as a whole.
        response.data = {api_settings.NON_FIELD_ERRORS_KEY: response.data}
    return response


def page_not_found(request, exception):
    """Django's 404 for a path no route matches (`/api/v1/devices/not-a-uuid/telemetry/`): JSON in
    the API's shape under /api/, the HTML page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return drf_server_error(request)
    return defaults.server_error(request)

"""One error shape for the API: DRF's (`{"field": ["message"]}` or `{"detail": "message"}`).

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
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback


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
        detail = "The change conflicts with existing data and was not saved."
        # PostgreSQL's detail names the column and value, e.g. "Key (serial_number)=(X) already exists."
        diag = getattr(exc.__cause__, "diag", None)
        if diag is not None and diag.message_detail:
            detail += f" {diag.message_detail}"
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
    return drf_exception_handler(exc, context)

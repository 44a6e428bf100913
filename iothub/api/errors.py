"""One error shape for the API: DRF's (`{"field": ["message"]}` or `{"detail": "message"}`), with
database conflicts turned into 409 instead of 500."""

from django.db import IntegrityError
from django.db.models import ProtectedError, RestrictedError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    if isinstance(exc, (ProtectedError, RestrictedError)):
        blocking = (
            sorted({obj._meta.verbose_name_plural for obj in exc.protected_objects})
            if hasattr(exc, "protected_objects")
            else []
        )
        detail = "Cannot delete: other records still refer to it"
        if blocking:
            detail += f" ({', '.join(blocking)})"
        return Response({"detail": detail + "."}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, IntegrityError):
        return Response(
            {"detail": "The change conflicts with existing data and was not saved."},
            status=status.HTTP_409_CONFLICT,
        )
    return drf_exception_handler(exc, context)

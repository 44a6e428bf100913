"""`GET /api/v1/health/`: whether the hub can serve, for load balancers and uptime checks.

Anonymous, so that a probe needs no credential; it says only what is up, never why not (the reason
goes to the log).
"""

import logging

from django.db import DatabaseError, connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

logger = logging.getLogger(__name__)

HealthSerializer = inline_serializer(
    name="Health",
    fields={
        "status": serializers.ChoiceField(choices=["ok", "error"]),
        "database": serializers.ChoiceField(choices=["ok", "unavailable"]),
        "timescaledb": serializers.BooleanField(
            allow_null=True, help_text="Whether the TimescaleDB extension is installed; null when unknown."
        ),
    },
)


class HealthView(APIView):
    # No authentication at all: a probe that sends a stale credential must still get an answer.
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses={
            status.HTTP_200_OK: HealthSerializer,
            status.HTTP_503_SERVICE_UNAVAILABLE: HealthSerializer,
        },
        description="200 when the database answers a query, 503 naming the failing part when not.",
    )
    def get(self, request):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")
                (timescaledb,) = cursor.fetchone()
        except DatabaseError:
            logger.warning("health check: the database did not answer", exc_info=True)
            return Response(
                {"status": "error", "database": "unavailable", "timescaledb": None},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response({"status": "ok", "database": "ok", "timescaledb": timescaledb})

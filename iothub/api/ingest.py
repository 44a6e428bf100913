"""`POST /api/v1/telemetry/`: devices send readings, one message or a batch.

The reply comes after the transaction commits: 201 means stored.
"""

import json
import time

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.utils import encoders
from rest_framework.views import APIView

from iothub.api.authentication import DeviceTokenAuthentication
from iothub.events.selectors import event_summary
from iothub.ingest.services import telemetry_ingest
from iothub.ingest.validation import FieldError, IngestRejected, Limits, decode_body, messages_validate
from iothub.monitoring import metrics


class IsDevice(permissions.BasePermission):
    message = "Only a device may send telemetry: use Authorization: Bearer <device token>."

    def has_permission(self, request, view) -> bool:
        return request.auth is not None and hasattr(request.user, "device")


def _limits() -> Limits:
    return Limits(
        max_batch=settings.IOTHUB_INGEST_MAX_BATCH,
        max_future_skew=settings.IOTHUB_INGEST_MAX_FUTURE_SKEW,
        max_age=settings.IOTHUB_INGEST_MAX_AGE,
    )


_Message = inline_serializer(
    "TelemetryMessage",
    {
        "version": serializers.ChoiceField(choices=["0.0.1"]),
        "serial_number": serializers.CharField(help_text="Must be the authenticated device's."),
        "metrics": serializers.DictField(child=serializers.FloatField(), help_text="Metric name to number."),
        "timestamp": serializers.DateTimeField(required=False, help_text="ISO 8601 with an offset."),
    },
)
_Stored = inline_serializer(
    "TelemetryStored",
    {
        "count": serializers.IntegerField(),
        "readings": inline_serializer(
            "StoredReading", {"id": serializers.IntegerField(), "timestamp": serializers.DateTimeField()}, many=True
        ),
        "events": serializers.ListField(child=serializers.DictField(), help_text="Events the readings raised."),
    },
)
_Rejected = inline_serializer(
    "TelemetryRejected",
    {
        "detail": serializers.CharField(),
        "errors": inline_serializer(
            "TelemetryFieldError",
            {
                "field": serializers.CharField(),
                "message": serializers.CharField(),
                "index": serializers.IntegerField(required=False, help_text="Position in a batch."),
            },
            many=True,
        ),
    },
)


class TelemetryIngestView(APIView):
    authentication_classes = [DeviceTokenAuthentication]
    permission_classes = [IsDevice]
    # The body is read and decoded here, not by DRF's parsers: NaN and Infinity must be named as
    # bad values of their field, and the size cap answered before the body is read.
    parser_classes: list = []
    # JSON only: devices never ask for the browsable API, and negotiating costs every request.
    renderer_classes = [JSONRenderer]

    # How many messages this request carried, for the metrics; 1 until the body is decoded.
    message_count = 1

    def dispatch(self, request, *args, **kwargs):
        started = time.perf_counter()
        response = super().dispatch(request, *args, **kwargs)
        # In-memory counters only: the ingest path pays microseconds for its metrics.
        metrics.ingest_observe(
            status=response.status_code, messages=self.message_count, seconds=time.perf_counter() - started
        )
        return response

    @extend_schema(
        operation_id="telemetry_ingest",
        summary="Send telemetry (one message or a batch)",
        request={"application/json": _Message},
        responses={
            201: _Stored,
            400: _Rejected,
            401: OpenApiResponse(description="Missing, unknown or revoked device token."),
            403: _Rejected,
            413: _Rejected,
            415: OpenApiResponse(description="The body is not application/json."),
        },
        examples=[
            OpenApiExample(
                "One message",
                value={"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"vibration": 5.2}},
                request_only=True,
            )
        ],
        tags=["telemetry"],
    )
    def post(self, request):
        device = request.auth
        try:
            data = self._read_json(request)
            self.message_count = len(data) if isinstance(data, list) else 1
            readings, _batch = messages_validate(
                data, serial_number=device.serial_number, now=timezone.now(), limits=_limits()
            )
        except IngestRejected as rejected:
            return Response(rejected.as_dict(), status=rejected.status)
        result = telemetry_ingest(device=device, readings=readings, rules=request.user.rules)
        metrics.events_raised(event.severity for event in result.events)
        body = {
            "count": len(result.readings),
            "readings": [{"id": r.id, "timestamp": r.timestamp} for r in result.readings],
            "events": [event_summary(e) for e in result.events],
        }
        # Rendered here rather than through a DRF Response: the shape is fixed, and the renderer's
        # machinery is a measurable share of a request this small.
        return HttpResponse(
            json.dumps(body, cls=encoders.JSONEncoder), content_type="application/json", status=status.HTTP_201_CREATED
        )

    def initial(self, request, *args, **kwargs):
        # A device gets JSON, has no API version and no throttle: of DRF's request set-up only
        # authentication and the permission check apply (content negotiation and the rest cost
        # every request for nothing). Errors still render as JSON through the accepted renderer.
        self.format_kwarg = None
        request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        self.perform_authentication(request)
        self.check_permissions(request)

    def _read_json(self, request) -> object:
        content_type = request.content_type.split(";")[0].strip().lower()
        if content_type != "application/json":
            raise IngestRejected(
                415, [FieldError("Content-Type", f"must be application/json, not {content_type or 'missing'}")]
            )
        cap = settings.IOTHUB_INGEST_MAX_BODY_BYTES
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if not declared.isdigit() or int(declared) > cap:
            raise IngestRejected(413, [FieldError("body", f"is larger than the limit of {cap} bytes")])
        return decode_body(request.body)

"""`POST /api/v1/telemetry/`: devices send readings, one message or a batch.

The reply comes after the transaction commits: 201 means stored.
"""

import json
import time

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.renderers import JSONRenderer
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
    """The ingest endpoint.

    Served by `dispatch` below, without DRF's request machinery (request wrapping, content
    negotiation, response rendering): an ingest request is small, and that machinery was a seventh
    of its cost. The class stays an APIView, with its authentication and permission classes and
    the `post` signature, so that the OpenAPI schema describes the endpoint like every other.
    """

    authentication_classes = [DeviceTokenAuthentication]
    permission_classes = [IsDevice]
    parser_classes: list = []
    renderer_classes = [JSONRenderer]

    def dispatch(self, request, *args, **kwargs):
        started = time.perf_counter()
        response, messages = self._ingest(request)
        # In-memory counters only: the ingest path pays microseconds for its metrics.
        metrics.ingest_observe(status=response.status_code, messages=messages, seconds=time.perf_counter() - started)
        return response

    def _ingest(self, request) -> tuple[HttpResponse, int]:
        """The response, and how many messages the request carried (1 until the body is read)."""
        if request.method != "POST":
            response = _json({"detail": f'Method "{request.method}" not allowed.'}, status.HTTP_405_METHOD_NOT_ALLOWED)
            response["Allow"] = "POST"
            return response, 1
        authentication = DeviceTokenAuthentication()
        try:
            found = authentication.authenticate(request)
        except exceptions.AuthenticationFailed as failed:
            found, detail = None, str(failed.detail)
        else:
            detail = "Authentication credentials were not provided: send Authorization: Bearer <device token>."
        if found is None:
            response = _json({"detail": detail}, status.HTTP_401_UNAUTHORIZED)
            response["WWW-Authenticate"] = authentication.authenticate_header(request)
            return response, 1
        principal, device = found
        request.auth = device  # for the request's log line
        messages = 1
        try:
            data = self._read_json(request)
            messages = len(data) if isinstance(data, list) else 1
            readings, _batch = messages_validate(
                data, serial_number=device.serial_number, now=timezone.now(), limits=_limits()
            )
        except IngestRejected as rejected:
            return _json(rejected.as_dict(), rejected.status), messages
        result = telemetry_ingest(device=device, readings=readings, rules=principal.rules)
        metrics.events_raised(event.severity for event in result.events)
        body = {
            "count": len(result.readings),
            "readings": [{"id": r.id, "timestamp": r.timestamp} for r in result.readings],
            "events": [event_summary(e) for e in result.events],
        }
        return _json(body, status.HTTP_201_CREATED), messages

    @extend_schema(
        operation_id="telemetry_ingest",
        summary="Send telemetry (one message or a batch)",
        description="A device sends the spec's payload, or a list of them, with its own token. 201 means "
        "committed; a refused request writes nothing, and its errors name the field and, in a batch, the "
        "message's index.",
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
        # Described for the schema by the decorator; requests are answered by `dispatch`.
        raise NotImplementedError

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


def _json(body: dict, status_code: int) -> HttpResponse:
    return HttpResponse(json.dumps(body, cls=encoders.JSONEncoder), content_type="application/json", status=status_code)

"""`POST /api/v1/telemetry/`: devices send readings, one message or a batch.

Two doors answer it with the same code below: the lean ASGI door (`iothub.api.ingest_door`),
which serves it in production, and this Django view, which serves it wherever Django alone runs
(runserver, a plain WSGI deployment, the tests' client). Both hand the request to the batched
writer and answer after the commit: 201 means stored.

What both share, in the order a request meets it:

1. `credential_parse`: the bearer token (401 without one);
2. `request_build`: the body (already read by the door, within the size cap) and the
   Idempotency-Key, into an `IngestRequest`; a body refused here (415, 413, malformed JSON) is
   answered after the device is authenticated, as every refusal of the body is;
3. the writer: authentication, validation, storage, in one batch;
4. `answer_for`: the outcome as status, JSON body and headers.
"""

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime

import orjson
from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import permissions, serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from iothub import metrics
from iothub.api.authentication import DeviceTokenAuthentication
from iothub.db import DATABASE_UNAVAILABLE
from iothub.ingest.services import (
    Accepted,
    Failed,
    IngestRequest,
    Outcome,
    Refused,
    Unavailable,
    UnknownSender,
    body_fingerprint,
)
from iothub.ingest.validation import (
    MAX_METRIC_MAGNITUDE,
    MAX_METRICS_PER_MESSAGE,
    SUPPORTED_VERSIONS,
    FieldError,
    IngestRejected,
    decode_body,
)
from iothub.ingest.writer import ingest_one

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
# A key is 1 to 255 visible ASCII characters, bare or as a quoted string (the IETF draft writes it
# as a structured-field string: `Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`).
_IDEMPOTENCY_KEY = re.compile(r"[\x21\x23-\x7e]{1,255}")
WWW_AUTHENTICATE = 'Bearer realm="devices"'


class IsDevice(permissions.BasePermission):
    message = "Only a device may send telemetry: use Authorization: Bearer <device token>."

    def has_permission(self, request, view) -> bool:
        return request.auth is not None and hasattr(request.user, "device")


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as both doors send it."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    device_id: object = None  # for the request's log line
    messages: int = 1  # readings stored or refused, for the counters


def _json_answer(status_code: int, body: dict, *headers: tuple[str, str]) -> Answer:
    return Answer(status_code, orjson.dumps(body), headers)


def _unauthorized(detail: str) -> Answer:
    return _json_answer(status.HTTP_401_UNAUTHORIZED, {"detail": detail}, ("WWW-Authenticate", WWW_AUTHENTICATE))


def credential_parse(authorization: str | None) -> str | Answer:
    """The device token of an `Authorization: Bearer <token>` header, or the 401 to answer."""
    parts = (authorization or "").split()
    if not parts or parts[0].lower() != "bearer":
        return _unauthorized("Authentication credentials were not provided: send Authorization: Bearer <device token>.")
    if len(parts) != 2:
        return _unauthorized("Send the header as: Authorization: Bearer <device token>.")
    if not parts[1].isascii():
        return _unauthorized("The device token has invalid characters.")
    return parts[1]


def body_refusal(*, content_type: str | None, content_length: str | None) -> IngestRejected | None:
    """What the headers alone refuse: a body that is not JSON (415), or declared larger than the
    cap (413), before a byte of it is read."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return IngestRejected(
            415, [FieldError("Content-Type", f"must be application/json, not {media_type or 'missing'}")]
        )
    if content_length is not None and (not content_length.isdigit() or int(content_length) > body_cap()):
        return body_too_large()
    return None


def body_cap() -> int:
    return settings.IOTHUB_INGEST_MAX_BODY_BYTES


def body_too_large() -> IngestRejected:
    return IngestRejected(413, [FieldError("body", f"is larger than the limit of {body_cap()} bytes")])


def request_build(
    *,
    token: str,
    body: bytes | IngestRejected,
    idempotency_key: str | None,
    received_at: datetime,
) -> IngestRequest:
    """The request for the writer. `body` is the body as read, or the refusal of it."""
    data: object = body
    fingerprint = None
    key = None
    if idempotency_key is not None:
        key = idempotency_key.strip()
        if len(key) >= 2 and key[0] == key[-1] == '"':
            key = key[1:-1]
        if not _IDEMPOTENCY_KEY.fullmatch(key):
            data = IngestRejected(
                400,
                [FieldError(IDEMPOTENCY_HEADER, "must be 1 to 255 visible ASCII characters, e.g. a UUID")],
            )
    if not isinstance(data, IngestRejected):
        try:
            data = decode_body(body)
        except IngestRejected as rejected:
            data = rejected
        else:
            fingerprint = body_fingerprint(body) if key is not None else None
    return IngestRequest(
        data=data,
        received_at=received_at,
        token=token,
        idempotency_key=key if fingerprint is not None else None,
        fingerprint=fingerprint,
    )


def answer_for(outcome: Outcome, *, messages: int) -> Answer:
    if isinstance(outcome, Accepted):
        headers = (("Idempotent-Replayed", "true"),) if outcome.replayed else ()
        return Answer(status.HTTP_201_CREATED, outcome.body, headers, outcome.device_id, messages)
    if isinstance(outcome, Refused):
        rejected = outcome.rejection
        return Answer(rejected.status, orjson.dumps(rejected.as_dict()), (), outcome.device_id, messages)
    if isinstance(outcome, UnknownSender):
        return _unauthorized("Unknown or revoked device token.")
    if isinstance(outcome, Unavailable):
        return unavailable_answer()
    if isinstance(outcome, Failed):
        return internal_error_answer()
    raise TypeError(f"not an ingest outcome: {outcome!r}")


def unavailable_answer() -> Answer:
    """The hub's one answer while the database is unreachable (iothub.db), as every door gives it."""
    reply = DATABASE_UNAVAILABLE
    headers = tuple((name, value) for name, value in reply.headers.items() if name.lower() != "content-type")
    return Answer(reply.status, reply.body, headers)


def internal_error_answer() -> Answer:
    return _json_answer(
        status.HTTP_500_INTERNAL_SERVER_ERROR, {"detail": "The request failed on the server; nothing was stored."}
    )


# The message as an OpenAPI schema, written out: it says what validation says (iothub/ingest/
# validation.py), which a serializer cannot (no unknown fields, 1 to 100 metrics, the values' range).
_MESSAGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "serial_number", "metrics"],
    "properties": {
        "version": {"type": "string", "enum": list(SUPPORTED_VERSIONS)},
        "serial_number": {"type": "string", "minLength": 1, "description": "Must be the authenticated device's."},
        "metrics": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_METRICS_PER_MESSAGE,
            "additionalProperties": {
                "type": "number",
                "minimum": -MAX_METRIC_MAGNITUDE,
                "maximum": MAX_METRIC_MAGNITUDE,
                "exclusiveMaximum": True,
            },
            "description": "Metric name (a letter, then up to 63 letters, digits, `_`, `.` or `-`) to number.",
        },
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "description": "ISO 8601 with an offset; at most IOTHUB_INGEST_MAX_FUTURE_SKEW_SECONDS ahead, and "
            "within the retention period. Without it, the time the hub received the message.",
        },
    },
}
_BODY = {
    "oneOf": [
        _MESSAGE,
        {"type": "array", "minItems": 1, "maxItems": settings.IOTHUB_INGEST_MAX_BATCH, "items": _MESSAGE},
    ]
}
_Detail = inline_serializer("TelemetryDetail", {"detail": serializers.CharField()})
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
    """The ingest endpoint, as Django serves it.

    Served by `dispatch` below, without DRF's request machinery (request wrapping, content
    negotiation, response rendering): the answer is the shared code's. The class stays an APIView,
    with its authentication and permission classes and the `post` signature, so that the OpenAPI
    schema describes the endpoint like every other.
    """

    authentication_classes = [DeviceTokenAuthentication]
    permission_classes = [IsDevice]
    parser_classes: list = []
    renderer_classes = [JSONRenderer]

    def dispatch(self, request, *args, **kwargs):
        started = time.perf_counter()
        answer = self._answer(request)
        metrics.ingest_observe(status=answer.status, messages=answer.messages, seconds=time.perf_counter() - started)
        response = HttpResponse(answer.body, content_type="application/json", status=answer.status)
        for name, value in answer.headers:
            response[name] = value
        request.device_id = answer.device_id  # for the request's log line
        return response

    def _answer(self, request) -> Answer:
        if request.method != "POST":
            answer = _json_answer(
                status.HTTP_405_METHOD_NOT_ALLOWED, {"detail": f'Method "{request.method}" not allowed.'}
            )
            return Answer(answer.status, answer.body, (("Allow", "POST"),))
        token = credential_parse(request.META.get("HTTP_AUTHORIZATION"))
        if isinstance(token, Answer):
            return token
        body = body_refusal(
            content_type=request.META.get("CONTENT_TYPE"), content_length=request.META.get("CONTENT_LENGTH") or None
        )
        if body is None:
            body = self._read_body(request)
        ingest_request = request_build(
            token=token,
            body=body,
            idempotency_key=request.META.get("HTTP_IDEMPOTENCY_KEY"),
            received_at=timezone.now(),
        )
        try:
            outcome = ingest_one(ingest_request)
        except Exception:
            logger.exception("ingest failed")
            return internal_error_answer()
        return answer_for(outcome, messages=ingest_request.message_count)

    @staticmethod
    def _read_body(request) -> bytes | IngestRejected:
        """The body within the cap. A chunked upload has no Content-Length, and Django reads no
        body without one: it is read here from the server's stream, which decodes the chunks."""
        if request.META.get("CONTENT_LENGTH"):
            return request.body
        if "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            return b""
        body = request.META["wsgi.input"].read(body_cap() + 1)
        return body_too_large() if len(body) > body_cap() else body

    @extend_schema(
        operation_id="telemetry_ingest",
        summary="Send telemetry (one message or a batch)",
        description="A device sends the spec's payload, or a list of them, with its own token. 201 means "
        "committed; a refused request writes nothing, and its errors name the field and, in a batch, the "
        "message's index.",
        request={"application/json": _BODY},
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Any unique string (a UUID): a retry with the same key and body within "
                f"{settings.IOTHUB_INGEST_IDEMPOTENCY_HOURS} hours gets the first answer again, and stores nothing "
                "twice (docs/ingest.md).",
            )
        ],
        responses={
            201: _Stored,
            400: _Rejected,
            401: OpenApiResponse(_Detail, description="Missing, unknown or revoked device token."),
            403: _Rejected,
            408: OpenApiResponse(_Rejected, description="The body did not arrive within the time allowed."),
            413: _Rejected,
            415: OpenApiResponse(_Rejected, description="The body is not application/json."),
            422: OpenApiResponse(_Rejected, description="The Idempotency-Key was used with another body."),
            503: OpenApiResponse(
                _Detail,
                description="The database is unreachable: nothing was stored; send again after Retry-After seconds.",
            ),
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

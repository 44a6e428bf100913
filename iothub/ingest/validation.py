"""Validation of telemetry messages, the spec's payload `{"version", "serial_number", "metrics"}`.

Written out rather than with serializers: a batch of 1,000 messages must validate in a few
milliseconds, and each rejection must name the message (its index in a batch) and the field.
A request is accepted whole or rejected whole.
"""

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from iothub.telemetry.services import NewReading

SUPPORTED_VERSIONS = ("0.0.1",)
MESSAGE_FIELDS = ("version", "serial_number", "metrics", "timestamp")
_MESSAGE_FIELDS = frozenset(MESSAGE_FIELDS)
METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
MAX_METRICS_PER_MESSAGE = 100
MAX_ERRORS_REPORTED = 20
# Every metric value, integer or not, lies in [-2**63, 2**63): a 64-bit integer (counters) is
# stored exactly, and no reading is large enough for a sum or an average of readings to leave
# the range of double precision (docs/ingest.md).
MAX_METRIC_MAGNITUDE = 2**63


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    index: int | None = None  # the message's position in a batch
    status: int = 400  # 403 for writing as another device: a permission question, not a typo

    def as_dict(self) -> dict:
        data = {"field": self.field, "message": self.message}
        if self.index is not None:
            data["index"] = self.index
        return data

    def __str__(self) -> str:
        where = f"message {self.index}: " if self.index is not None else ""
        return f"{where}{self.field}: {self.message}"


class IngestRejected(Exception):
    """The request is refused as a whole; nothing was written."""

    def __init__(self, status: int, errors: list[FieldError]):
        super().__init__(str(errors[0]))
        self.status = status
        self.errors = errors

    def as_dict(self) -> dict:
        return {"detail": str(self.errors[0]), "errors": [e.as_dict() for e in self.errors]}


class _NonFinite:
    """What the JSON decoder yields for NaN and ±Infinity, so validation can name the field."""

    def __init__(self, literal: str):
        self.literal = literal


class _LongInteger:
    """What the JSON decoder yields for an integer of more digits than any metric value may have,
    unconverted: Python refuses to convert more than 4,300 digits (and would take quadratic time
    below that), and validation names the field."""

    def __init__(self, digits: int):
        self.digits = digits


# Any integer within the metric range has at most this many characters, its sign included.
_LONGEST_INTEGER = len(str(-MAX_METRIC_MAGNITUDE))


def _parse_int(text: str) -> int | _LongInteger:
    return int(text) if len(text) <= _LONGEST_INTEGER else _LongInteger(len(text))


def decode_body(body: bytes) -> object:
    # orjson first: a tenth of the standard library's time. It refuses what the standard library
    # would take or name more precisely (NaN, integers beyond 64 bits, UTF-16, nesting beyond its
    # limit, lone surrogates): those bodies go through the standard library, whose outcome is the
    # same as before this fast path.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body, parse_constant=_NonFinite, parse_int=_parse_int)
    except UnicodeDecodeError:
        raise IngestRejected(400, [FieldError("body", "is not UTF-8 text")]) from None
    except json.JSONDecodeError as exc:
        raise IngestRejected(
            400, [FieldError("body", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]
        ) from None
    except RecursionError:
        # Python's parser recurses per level; a message is three levels deep.
        raise IngestRejected(400, [FieldError("body", "is nested too deeply to be telemetry")]) from None


@dataclass(frozen=True)
class Limits:
    max_batch: int
    max_future_skew: timedelta
    max_age: timedelta


def messages_validate(
    data: object, *, serial_number: str, now: datetime, limits: Limits
) -> tuple[list[NewReading], bool]:
    """The readings of a request body (one message or a list of them), or `IngestRejected`.

    Returns the readings and whether the body was a batch.
    """
    if isinstance(data, list):
        if not data:
            raise IngestRejected(400, [FieldError("body", "the batch is empty; send at least one message")])
        if len(data) > limits.max_batch:
            raise IngestRejected(
                413,
                [FieldError("body", f"the batch has {len(data)} messages; the limit is {limits.max_batch}")],
            )
        messages, batch = data, True
    elif isinstance(data, dict):
        messages, batch = [data], False
    else:
        raise IngestRejected(400, [FieldError("body", "must be a JSON object (one message) or a list of them")])

    readings: list[NewReading] = []
    errors: list[FieldError] = []
    for position, message in enumerate(messages):
        reading, message_errors = _message_validate(
            message, index=position if batch else None, serial_number=serial_number, now=now, limits=limits
        )
        errors.extend(message_errors)
        if reading is not None:
            readings.append(reading)
    if errors:
        forbidden = [e for e in errors if e.status == 403]
        if forbidden:
            raise IngestRejected(403, forbidden[:MAX_ERRORS_REPORTED])
        raise IngestRejected(400, errors[:MAX_ERRORS_REPORTED])
    return readings, batch


def _message_validate(
    message: object, *, index: int | None, serial_number: str, now: datetime, limits: Limits
) -> tuple[NewReading | None, list[FieldError]]:
    if not isinstance(message, dict):
        return None, [FieldError("message", "must be a JSON object", index)]
    errors: list[FieldError] = []

    unknown = [] if _MESSAGE_FIELDS.issuperset(message) else sorted(set(message) - _MESSAGE_FIELDS)
    if unknown:
        errors.append(FieldError(unknown[0], f"unknown field; a message has only {', '.join(MESSAGE_FIELDS)}", index))

    version = message.get("version")
    if version is None:
        errors.append(FieldError("version", "is required", index))
    elif not isinstance(version, str):
        errors.append(FieldError("version", f"must be a string such as {SUPPORTED_VERSIONS[-1]!r}", index))
    elif version not in SUPPORTED_VERSIONS:
        errors.append(
            FieldError("version", f"{version!r} is not supported; supported: {', '.join(SUPPORTED_VERSIONS)}", index)
        )

    serial = message.get("serial_number")
    if serial is None:
        errors.append(FieldError("serial_number", "is required", index))
    elif not isinstance(serial, str):
        errors.append(FieldError("serial_number", "must be a string, the device's serial number", index))
    elif serial != serial_number:
        errors.append(
            FieldError("serial_number", f"{serial!r} is not the serial number of this token's device", index, 403)
        )

    metrics = message.get("metrics")
    if metrics is None:
        errors.append(FieldError("metrics", "is required", index))
    elif not isinstance(metrics, dict):
        errors.append(FieldError("metrics", "must be an object of metric names to numbers", index))
    elif not metrics:
        errors.append(FieldError("metrics", "must hold at least one metric", index))
    elif len(metrics) > MAX_METRICS_PER_MESSAGE:
        errors.append(FieldError("metrics", f"holds {len(metrics)} metrics; the limit is 100", index))
    else:
        for name, value in metrics.items():
            error = _metric_error(name, value)
            if error:
                errors.append(FieldError(f"metrics.{name}", error, index))

    timestamp = now
    raw_timestamp = message.get("timestamp")
    if raw_timestamp is not None:
        timestamp, error = _timestamp_parse(raw_timestamp, now=now, limits=limits)
        if error:
            errors.append(FieldError("timestamp", error, index))

    if errors:
        return None, errors
    payload = {"version": version, "serial_number": serial, "metrics": metrics}
    return NewReading(timestamp=timestamp, payload=payload), []


# Metric names seen valid: a fleet reports a few dozen names, millions of times.
_VALID_NAMES: set[str] = set()
_VALID_NAMES_KEPT = 10_000


def _metric_error(name: str, value: object) -> str | None:
    if type(value) is float and name in _VALID_NAMES and -MAX_METRIC_MAGNITUDE <= value < MAX_METRIC_MAGNITUDE:
        return None  # the common case, decided without the checks below (NaN fails the comparison)
    if not METRIC_NAME.fullmatch(name):
        return "a metric name starts with a letter and has at most 64 letters, digits, '_', '.' or '-'"
    if len(_VALID_NAMES) < _VALID_NAMES_KEPT:
        _VALID_NAMES.add(name)
    if isinstance(value, _NonFinite):
        return f"{value.literal} is not a finite number"
    if isinstance(value, _LongInteger):
        return f"is out of range: an integer of {value.digits} digits"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, not {_json_type(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return "is out of range (not a finite number)"
    if not -MAX_METRIC_MAGNITUDE <= value < MAX_METRIC_MAGNITUDE:
        if isinstance(value, int):
            return "is out of range for an integer (64 bits)"
        return f"is out of range: a metric value lies within ±{MAX_METRIC_MAGNITUDE:.3g}, the range of a 64-bit integer"
    return None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _timestamp_parse(raw: object, *, now: datetime, limits: Limits) -> tuple[datetime, str | None]:
    if not isinstance(raw, str):
        return now, "must be an ISO 8601 string with an offset, e.g. 2025-01-21T10:00:00Z"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return now, f"{raw!r} is not ISO 8601; e.g. 2025-01-21T10:00:00Z"
    if value.tzinfo is None or value.utcoffset() is None:
        return now, f"{raw!r} has no offset; add Z or +hh:mm"
    if value > now + limits.max_future_skew:
        return now, (
            f"{raw!r} is in the future by more than {int(limits.max_future_skew.total_seconds())} s; "
            "check the device's clock"
        )
    if value < now - limits.max_age:
        return now, f"{raw!r} is older than the retention period ({limits.max_age.days} days)"
    # The same instant in UTC: ISO 8601 allows offsets up to ±23:59, PostgreSQL only up to ±15:59.
    return value.astimezone(UTC), None

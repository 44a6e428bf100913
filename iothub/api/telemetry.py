"""Telemetry queries of one device: raw readings, latest values, aggregates, CSV export.

All under `/api/v1/devices/{id}/telemetry/`; users with any role may read.
"""

import csv
import io
import itertools
import math
import re
from datetime import timedelta

from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from iothub.api.filters import range_start
from iothub.devices.models import Device
from iothub.telemetry.models import Telemetry
from iothub.telemetry.selectors import (
    AGGREGATES,
    COMPARISONS,
    MAX_BUCKETS,
    METRIC_NAME,
    telemetry_aggregate,
    telemetry_export_csv,
    telemetry_range,
)

DEFAULT_RANGE = timedelta(hours=24)
BUCKET = re.compile(r"(\d+)([smhdw])")
BUCKET_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Bucket sizes chosen when none is asked for: the smallest giving at most ~300 buckets.
AUTO_BUCKETS = ("1m", "5m", "15m", "1h", "3h", "6h", "12h", "1d", "7d")


def bucket_parse(text: str) -> timedelta:
    match = BUCKET.fullmatch(text.strip())
    if not match or int(match[1]) == 0:
        raise serializers.ValidationError("must be a positive number and a unit s, m, h, d or w, e.g. 5m or 1h")
    return timedelta(**{BUCKET_UNITS[match[2]]: int(match[1])})


def bucket_for_range(span: timedelta) -> str:
    for candidate in AUTO_BUCKETS:
        if span / bucket_parse(candidate) <= 300:
            return candidate
    return AUTO_BUCKETS[-1]


class RangeQuery(serializers.Serializer):
    """`from` and `to` (ISO 8601; default: the last 24 hours)."""

    to = serializers.DateTimeField(required=False, help_text="End (exclusive). Default: now.")
    locals()["from"] = serializers.DateTimeField(required=False, help_text="Start. Default: 24 hours before `to`.")

    def validate(self, attrs):
        end = attrs.get("to") or timezone.now()
        start = attrs.get("from") or range_start(end, DEFAULT_RANGE, field="to")
        if start >= end:
            raise serializers.ValidationError({"from": "must be before `to`"})
        attrs["start"], attrs["end"] = start, end
        return attrs


def metric_field(**kwargs) -> serializers.RegexField:
    # RegexField searches rather than matches, hence the anchors.
    return serializers.RegexField(
        rf"\A{METRIC_NAME.pattern}\Z",
        error_messages={"invalid": "is not a metric name (a letter, then letters, digits, '_', '.' or '-')"},
        **kwargs,
    )


class RawQuery(RangeQuery):
    order = serializers.ChoiceField(choices=["desc", "asc"], default="desc", help_text="Newest or oldest first.")
    metric = metric_field(required=False, help_text="Only readings that carry this metric.")
    gt = serializers.DecimalField(max_digits=30, decimal_places=10, required=False)
    gte = serializers.DecimalField(max_digits=30, decimal_places=10, required=False)
    lt = serializers.DecimalField(max_digits=30, decimal_places=10, required=False)
    lte = serializers.DecimalField(max_digits=30, decimal_places=10, required=False)
    eq = serializers.DecimalField(max_digits=30, decimal_places=10, required=False)
    neq = serializers.DecimalField(max_digits=30, decimal_places=10, required=False)

    def validate(self, attrs):
        attrs = super().validate(attrs)
        comparisons = {op: attrs[op] for op in COMPARISONS if op in attrs}
        if comparisons and not attrs.get("metric"):
            raise serializers.ValidationError({"metric": f"is required with {', '.join(comparisons)}"})
        attrs["comparisons"] = comparisons
        return attrs


class AggregateQuery(RangeQuery):
    metric = metric_field(required=False, help_text="Default: the device type's primary metric.")
    bucket = serializers.CharField(required=False, help_text="Bucket size, e.g. 1m, 15m, 1h, 1d. Default: by range.")
    agg = serializers.CharField(required=False, help_text=f"Comma-separated, of {', '.join(AGGREGATES)}. Default: all.")

    def validate_bucket(self, value: str) -> timedelta:
        return bucket_parse(value)

    def validate_agg(self, value: str) -> list[str]:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in AGGREGATES]
        if not names or unknown:
            raise serializers.ValidationError(f"choose among {', '.join(AGGREGATES)}; unknown: {', '.join(unknown)}")
        return list(dict.fromkeys(names))

    def validate(self, attrs):
        attrs = super().validate(attrs)
        span = attrs["end"] - attrs["start"]
        bucket = attrs.get("bucket") or bucket_parse(bucket_for_range(span))
        if span / bucket > MAX_BUCKETS:
            raise serializers.ValidationError(
                {"bucket": f"gives {math.ceil(span / bucket)} buckets over this range; the limit is {MAX_BUCKETS}"}
            )
        attrs["bucket"] = bucket
        attrs["agg"] = attrs.get("agg") or list(AGGREGATES)
        return attrs


class ExportQuery(RangeQuery):
    metric = serializers.CharField(
        required=False, help_text="Comma-separated metric columns. Default: every metric the device has reported."
    )

    def validate_metric(self, value: str) -> list[str]:
        names = [name.strip() for name in value.split(",") if name.strip()]
        bad = [name for name in names if not METRIC_NAME.fullmatch(name)]
        if not names or bad:
            raise serializers.ValidationError(f"is not a list of metric names: {', '.join(bad) or value!r}")
        return list(dict.fromkeys(names))


def parse_query(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class TelemetryRowSerializer(serializers.ModelSerializer):
    class Meta:
        model = Telemetry
        fields = ["id", "timestamp", "payload"]


class TelemetryCursorPagination(CursorPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_ordering(self, request, queryset, view):
        if request.query_params.get("order") == "asc":
            return ("timestamp", "id")
        return ("-timestamp", "-id")


def _device(device_id) -> Device:
    return get_object_or_404(Device.objects.select_related("device_type"), pk=device_id)


_range_parameters = [
    OpenApiParameter("from", OpenApiTypes.DATETIME, description="Start (inclusive). Default: 24 hours before `to`."),
    OpenApiParameter("to", OpenApiTypes.DATETIME, description="End (exclusive). Default: now."),
]


@extend_schema(
    tags=["telemetry"],
    summary="A device's readings in a time range",
    parameters=[
        *_range_parameters,
        OpenApiParameter("order", str, enum=["desc", "asc"], description="Newest (default) or oldest first."),
        OpenApiParameter("metric", str, description="Only readings that carry this metric."),
        *[
            OpenApiParameter(op, OpenApiTypes.DECIMAL, description=f"With `metric`: value {sign} this.")
            for op, sign in COMPARISONS.items()
        ],
    ],
)
class TelemetryListView(generics.ListAPIView):
    serializer_class = TelemetryRowSerializer
    pagination_class = TelemetryCursorPagination
    # Ordered by `order` and paged by a cursor: none of the lists' filter, search and `ordering`
    # parameters apply (DRF's ordering filter cannot even list the fields of a composite key).
    filter_backends: list = []
    queryset = Telemetry.objects.none()  # for the schema; get_queryset() builds the real one

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        device = _device(self.kwargs["device_id"])
        query = parse_query(RawQuery, self.request)
        return telemetry_range(
            device_id=device.id,
            start=query["start"],
            end=query["end"],
            metric=query.get("metric"),
            comparisons=query["comparisons"],
        )


class TelemetryLatestView(APIView):
    @extend_schema(
        tags=["telemetry"],
        summary="The last value of every metric and when it came",
        responses=inline_serializer(
            "TelemetryLatest",
            {
                "device": serializers.UUIDField(),
                "last_seen": serializers.DateTimeField(allow_null=True),
                "metrics": serializers.DictField(
                    child=inline_serializer(
                        "LatestValue",
                        {
                            "value": serializers.FloatField(),
                            "timestamp": serializers.DateTimeField(),
                            "telemetry_id": serializers.IntegerField(),
                        },
                    )
                ),
            },
        ),
    )
    def get(self, request, device_id):
        device = _device(device_id)
        return Response({"device": device.id, "last_seen": device.last_seen, "metrics": device.latest_metrics or {}})


class TelemetryAggregateView(APIView):
    @extend_schema(
        tags=["telemetry"],
        summary="Time-bucketed aggregates of one metric",
        parameters=[
            *_range_parameters,
            OpenApiParameter("metric", str, description="Default: the device type's primary metric."),
            OpenApiParameter("bucket", str, description="Bucket size: 30s, 5m, 1h, 1d, 1w. Default: by range."),
            OpenApiParameter("agg", str, description=f"Comma-separated of {', '.join(AGGREGATES)}. Default: all."),
        ],
        responses=inline_serializer(
            "TelemetryAggregate",
            {
                "metric": serializers.CharField(),
                "unit": serializers.CharField(allow_null=True),
                "bucket_seconds": serializers.IntegerField(),
                "from": serializers.DateTimeField(),
                "to": serializers.DateTimeField(),
                "buckets": serializers.ListField(child=serializers.DictField()),
            },
        ),
    )
    def get(self, request, device_id):
        device = _device(device_id)
        query = parse_query(AggregateQuery, request)
        metric = query.get("metric") or device.device_type.metric_name
        buckets = telemetry_aggregate(
            device_id=device.id,
            metric=metric,
            bucket=query["bucket"],
            start=query["start"],
            end=query["end"],
            aggregates=query["agg"],
        )
        return Response(
            {
                "metric": metric,
                "unit": device.device_type.metric_unit if metric == device.device_type.metric_name else None,
                "bucket_seconds": int(query["bucket"].total_seconds()),
                "from": query["start"],
                "to": query["end"],
                "buckets": [{"bucket": b.start, **b.values} for b in buckets],
            }
        )


class TelemetryExportView(APIView):
    @extend_schema(
        tags=["telemetry"],
        summary="A device's readings in a time range as CSV (streamed)",
        parameters=[
            *_range_parameters,
            OpenApiParameter("metric", str, description="Comma-separated columns. Default: every metric reported."),
        ],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request, device_id):
        device = _device(device_id)
        query = parse_query(ExportQuery, request)
        metrics = query.get("metric") or _reported_metrics(device)
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(["timestamp", "telemetry_id", *metrics])
        body = telemetry_export_csv(device_id=device.id, start=query["start"], end=query["end"], metrics=metrics)
        lines = itertools.chain([header.getvalue().encode()], body)

        filename = f"{device.serial_number}_{query['start']:%Y%m%dT%H%M%S}_{query['end']:%Y%m%dT%H%M%S}.csv"
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{_safe_filename(filename)}"'
        return response


def _reported_metrics(device: Device) -> list[str]:
    """The primary metric first, then the others the device has reported, by name."""
    names = sorted(device.latest_metrics or {})
    primary = device.device_type.metric_name
    return [primary, *[n for n in names if n != primary]]


def _safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)

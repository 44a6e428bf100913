"""What the API's lists and queries share: time filters read as UTC instants, the default start
of a time range, and a search whose refusal names its parameter.

ISO 8601 lets a timestamp carry any offset up to ±23:59 (Python reads them all); PostgreSQL's
`timestamptz` input takes offsets up to ±15:59 only. Every time the API reads is therefore turned
into the same instant in UTC before it reaches a query, and one that falls outside the calendar
Python and the API work in (years 1 to 9999) once in UTC is a 400 naming the parameter.
"""

from datetime import UTC, datetime, timedelta

from django.core.exceptions import ValidationError
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from rest_framework import filters as drf_filters
from rest_framework import serializers

OUT_OF_RANGE = "is outside years 1 to 9999 once converted to UTC"


class UtcIsoDateTimeField(IsoDateTimeField):
    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise ValidationError(OUT_OF_RANGE, code="overflow") from None


class UtcDateTimeFilter(filters.IsoDateTimeFilter):
    """An ISO 8601 filter whose value reaches the query as a UTC instant."""

    field_class = UtcIsoDateTimeField


def range_start(end: datetime, span: timedelta, *, field: str) -> datetime:
    """`end - span`, the default start of a range; a 400 naming `field` (the end's parameter) when
    that is before year 1."""
    try:
        return end - span
    except OverflowError:
        raise serializers.ValidationError({field: ["is too early: the range would start before year 1"]}) from None


class SearchFilter(drf_filters.SearchFilter):
    """DRF's search, whose refusal (a NUL character) names the `search` parameter like every other
    400 of the API, rather than answering a bare list."""

    def get_search_terms(self, request):
        try:
            return super().get_search_terms(request)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({self.search_param: exc.detail}) from None

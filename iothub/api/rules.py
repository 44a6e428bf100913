"""The rules API: `/api/v1/rules/` (CRUD, filters by device and enabled) and the backtest.

Views are thin: DRF checks the shape of the input, the domain validates (`iothub.rules.actions`
for `action_config`, shared with the admin) and writes (`iothub.rules.services`).
"""

import copy
from datetime import timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from iothub.api.filters import range_start
from iothub.rules.actions import action_config_validate
from iothub.rules.backtest import MAX_FIRST_EVENTS, MAX_MATCHES, MAX_RANGE, rule_backtest
from iothub.rules.models import Operator, Rule
from iothub.rules.selectors import rule_list, rule_state_view
from iothub.rules.services import (
    ALARM_DEFAULTS,
    ALARM_FIELDS,
    DEFAULT_COOLDOWN_MINUTES,
    MAX_COOLDOWN_MINUTES,
    MAX_DURATION_SECONDS,
    MAX_REMINDER_LIMIT,
    MAX_REMINDER_MINUTES,
    METRIC_NAME,
    RuleHasEvents,
    alarm_problems,
    escalation_problems,
    rule_create,
    rule_delete,
    rule_update,
)

_RECIPIENT_SCHEMA = {
    "oneOf": [
        {"type": "string", "format": "email", "description": "An email address."},
        {
            "type": "object",
            "description": "A recipient as in a notification template's `recipients`.",
            "properties": {
                "type": {"type": "string", "enum": ["email", "sms", "webhook"]},
                "address": {"type": "string", "description": "For `email`."},
                "phone": {"type": "string", "description": "For `sms`, e.g. +380501234567."},
                "url": {"type": "string", "format": "uri", "description": "For `webhook`."},
                "name": {"type": "string"},
            },
            "required": ["type"],
            "additionalProperties": False,
        },
    ]
}
_ACTION_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "maxItems": 20,
    "items": {
        "oneOf": [
            {
                "type": "object",
                "title": "notification",
                "properties": {
                    "type": {"type": "string", "enum": ["notification"]},
                    "template_id": {"type": "integer", "description": "An active notification template."},
                    "recipients": {"type": "array", "items": _RECIPIENT_SCHEMA, "maxItems": 50},
                },
                "required": ["type", "template_id"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "title": "stop_machine",
                "properties": {
                    "type": {"type": "string", "enum": ["stop_machine"]},
                    "machine_id": {"type": "string", "maxLength": 255},
                },
                "required": ["type", "machine_id"],
                "additionalProperties": False,
            },
        ]
    },
    "example": [
        {"type": "notification", "template_id": 5, "recipients": ["admin@company.com"]},
        {"type": "stop_machine", "machine_id": "M-123"},
    ],
}


_ESCALATION_SCHEMA = {
    "type": "object",
    "properties": {
        "after_minutes": {"type": "integer", "minimum": 1, "maximum": MAX_REMINDER_MINUTES},
        "template_id": {"type": "integer", "description": "An active notification template."},
    },
    "required": ["after_minutes", "template_id"],
    "additionalProperties": False,
    "example": {"after_minutes": 30, "template_id": 7},
}


@extend_schema_field(_ESCALATION_SCHEMA)
class EscalationField(serializers.JSONField):
    """`escalation`, validated by the domain's `escalation_problems`."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if data is None:
            return None
        problems = escalation_problems(data)
        if problems:
            raise serializers.ValidationError(problems)
        return data


@extend_schema_field(_ACTION_SCHEMA)
class ActionConfigField(serializers.JSONField):
    """`action_config`, validated by the domain's `action_config_validate`."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        try:
            return action_config_validate(data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict["action_config"]) from None


_REQUIRED = "This field is required."
# What a backtest request may change of the rule, and the alarm options a replay honours.
REPLAYED_OPTIONS = (
    "duration_seconds",
    "clear_threshold",
    "clear_duration_seconds",
    "auto_resolve",
    "dedupe_while_open",
)
DRAFT_FIELDS = ("operator", "threshold", "metric", "cooldown_minutes", *REPLAYED_OPTIONS)
_STATE_SCHEMA = {
    "type": "object",
    "properties": {
        "phase": {"type": "string", "enum": ["ok", "pending", "firing", "cleared"]},
        "since": {"type": "string", "format": "date-time", "nullable": True},
        "last_reading_at": {"type": "string", "format": "date-time", "nullable": True},
        "open_event": {"type": "integer", "nullable": True},
    },
    "required": ["phase", "since", "last_reading_at", "open_event"],
}


class RuleSerializer(serializers.ModelSerializer):
    metric = serializers.CharField(
        max_length=50,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="The metric the rule reads from each message's `metrics`; null: the device type's `metric_name`.",
    )
    cooldown_minutes = serializers.IntegerField(
        min_value=0,
        max_value=MAX_COOLDOWN_MINUTES,
        default=DEFAULT_COOLDOWN_MINUTES,
        help_text="Minimum time between two events of this rule, measured on the readings' timestamps. "
        "0: every matching reading raises one. Reads null for a row written without it (the default, 15).",
    )
    is_enabled = serializers.BooleanField(default=True, help_text="A disabled rule is not evaluated.")
    action_config = ActionConfigField(help_text="What the rule does when it triggers, in order.")
    threshold = serializers.DecimalField(
        max_digits=15,
        decimal_places=4,
        required=False,
        help_text="The value the metric is compared with. Required, except for a `nodata` rule (stored as 0).",
    )
    duration_seconds = serializers.IntegerField(
        min_value=0,
        max_value=MAX_DURATION_SECONDS,
        default=0,
        help_text="The condition must hold on every reading for this long (by the readings' timestamps) "
        "before an event is raised; a reading that breaks it starts again. For `nodata`: how long without "
        "a reading raises the event (required). 0: at once.",
    )
    clear_threshold = serializers.DecimalField(
        max_digits=15,
        decimal_places=4,
        required=False,
        allow_null=True,
        default=None,
        help_text="Hysteresis: a reading is back on the safe side only when the condition no longer holds "
        "against this value (gt/gte/lt/lte only; null: `threshold`).",
    )
    clear_duration_seconds = serializers.IntegerField(
        min_value=0,
        max_value=MAX_DURATION_SECONDS,
        default=0,
        help_text="How long readings must stay on the safe side before the rule counts as cleared.",
    )
    auto_resolve = serializers.BooleanField(
        default=False, help_text="Resolve the rule's open event (by `system`) once the rule has cleared."
    )
    dedupe_while_open = serializers.BooleanField(
        default=False,
        help_text="One open event per rule: while it is new or acknowledged, breaches update it "
        "(`occurrences`, `last_value`, `last_seen_at`) instead of raising another.",
    )
    reminder_minutes = serializers.IntegerField(
        min_value=1,
        max_value=MAX_REMINDER_MINUTES,
        required=False,
        allow_null=True,
        default=None,
        help_text="Send the rule's notifications again every this many minutes while its event is "
        "unacknowledged. null: no reminders.",
    )
    reminder_limit = serializers.IntegerField(
        min_value=1,
        max_value=MAX_REMINDER_LIMIT,
        required=False,
        allow_null=True,
        default=None,
        help_text="At most this many reminders per event. null: until acknowledged or resolved.",
    )
    escalation = EscalationField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Notify a second template if the event is still unacknowledged `after_minutes` after it was raised.",
    )

    state = serializers.SerializerMethodField(
        help_text="Where the rule stands: `phase` ok, pending (the condition holds, not yet for "
        "`duration_seconds`), firing (an event was raised) or cleared (back on the safe side while its "
        "event is open); `since` when that phase began, by the readings' timestamps; `last_reading_at` "
        "the newest reading judged; `open_event` the id of its open event. A rule without alarm options "
        "keeps no state and reads ok."
    )

    class Meta:
        model = Rule
        fields = [
            "id",
            "device",
            "name",
            "description",
            "metric",
            "operator",
            "threshold",
            "severity",
            "cooldown_minutes",
            "is_enabled",
            "action_config",
            *ALARM_FIELDS,
            "state",
            "last_triggered_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "last_triggered_at", "created_at", "updated_at"]

    @extend_schema_field(_STATE_SCHEMA)
    def get_state(self, rule: Rule) -> dict:
        return rule_state_view(rule)

    def to_internal_value(self, data):
        # `threshold` is required unless the rule is a nodata rule, named with the other missing fields.
        missing = not self.partial and isinstance(data, dict) and "threshold" not in data
        if missing and data.get("operator") != Operator.NODATA:
            try:
                super().to_internal_value(data)
            except serializers.ValidationError as exc:
                exc.detail.setdefault("threshold", [_REQUIRED])
                raise
            raise serializers.ValidationError({"threshold": [_REQUIRED]})
        attrs = super().to_internal_value(data)
        if missing:
            attrs["threshold"] = Decimal(0)  # the column is NOT NULL (the spec's); a nodata rule ignores it
        return attrs

    def validate_metric(self, value: str | None) -> str | None:
        if not value:
            return None
        if not METRIC_NAME.fullmatch(value):
            raise serializers.ValidationError(
                f"{value!r} is not a metric name: a letter, then letters, digits, _ . - (at most 50)"
            )
        return value


class RuleFilter(filters.FilterSet):
    is_enabled = filters.BooleanFilter(
        method="filter_is_enabled", help_text="true: enabled rules; false: disabled ones (NULL reads as disabled)."
    )

    class Meta:
        model = Rule
        fields = ["device", "is_enabled", "severity", "operator"]

    def filter_is_enabled(self, queryset, name, value):
        if value:
            return queryset.filter(is_enabled=True)
        return queryset.filter(Q(is_enabled=False) | Q(is_enabled__isnull=True))


class BacktestRequestSerializer(serializers.Serializer):
    start = serializers.DateTimeField(
        required=False, help_text="Start of the range (inclusive). Default: 7 days before `end`."
    )
    end = serializers.DateTimeField(required=False, help_text="End of the range (exclusive). Default: now.")
    operator = serializers.ChoiceField(choices=Operator.choices, required=False, help_text="Draft: default the rule's.")
    threshold = serializers.DecimalField(
        max_digits=15, decimal_places=4, required=False, help_text="Draft: default the rule's."
    )
    metric = serializers.CharField(max_length=50, required=False, help_text="Draft: default the rule's.")
    cooldown_minutes = serializers.IntegerField(
        min_value=0, max_value=MAX_COOLDOWN_MINUTES, required=False, help_text="Draft: default the rule's."
    )
    duration_seconds = serializers.IntegerField(
        min_value=0, max_value=MAX_DURATION_SECONDS, required=False, help_text="Draft: default the rule's."
    )
    clear_threshold = serializers.DecimalField(
        max_digits=15, decimal_places=4, required=False, allow_null=True, help_text="Draft: default the rule's."
    )
    clear_duration_seconds = serializers.IntegerField(
        min_value=0, max_value=MAX_DURATION_SECONDS, required=False, help_text="Draft: default the rule's."
    )
    auto_resolve = serializers.BooleanField(required=False, help_text="Draft: default the rule's.")
    dedupe_while_open = serializers.BooleanField(required=False, help_text="Draft: default the rule's.")
    first = serializers.IntegerField(
        min_value=0, max_value=MAX_FIRST_EVENTS, default=10, help_text="How many of the events to list."
    )

    def validate_metric(self, value: str) -> str:
        if not METRIC_NAME.fullmatch(value):
            raise serializers.ValidationError(f"{value!r} is not a metric name")
        return value

    def validate(self, attrs):
        end = attrs.setdefault("end", timezone.now())
        if "start" not in attrs:
            attrs["start"] = range_start(end, timedelta(days=7), field="end")
        start = attrs["start"]
        if end <= start:
            raise serializers.ValidationError({"end": ["must be after start"]})
        if end - start > MAX_RANGE:
            raise serializers.ValidationError(
                {"start": [f"the range is longer than {MAX_RANGE.days} days; backtest it in parts"]}
            )
        return attrs


class BacktestEventSerializer(serializers.Serializer):
    timestamp = serializers.DateTimeField()
    value = serializers.DecimalField(
        max_digits=30, decimal_places=None, coerce_to_string=True, allow_null=True, help_text="null: a nodata event."
    )
    telemetry_id = serializers.IntegerField(allow_null=True)
    occurrences = serializers.IntegerField(help_text="Breaches folded into it while open (`dedupe_while_open`).")
    resolved_at = serializers.DateTimeField(allow_null=True, help_text="When the hub would have resolved it.")
    resolved_telemetry_id = serializers.IntegerField(allow_null=True, help_text="The reading that would have.")


class BacktestResultSerializer(serializers.Serializer):
    rule = serializers.UUIDField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    condition = serializers.DictField(
        help_text="What was replayed: metric, operator, threshold, cooldown_minutes and the alarm options."
    )
    events = serializers.IntegerField(help_text="How many events the rule would have raised.")
    resolved = serializers.IntegerField(help_text="How many of them the hub would have resolved itself.")
    updates = serializers.IntegerField(help_text="Breaches folded into an open event (`dedupe_while_open`).")
    matching_readings = serializers.IntegerField(help_text="Readings that met the condition, cooldown or not.")
    first_events = BacktestEventSerializer(many=True)
    truncated = serializers.BooleanField(
        help_text=f"True when more than {MAX_MATCHES} readings matched: the counts cover up to `scanned_until`."
    )
    scanned_until = serializers.DateTimeField()


@extend_schema_view(
    destroy=extend_schema(
        description="Delete a rule that never raised an event. A rule with events is kept for their "
        "history: 409; disable it instead (`is_enabled: false`).",
        responses={
            status.HTTP_204_NO_CONTENT: None,
            status.HTTP_409_CONFLICT: OpenApiResponse(description="The rule has events."),
        },
    )
)
class RuleViewSet(viewsets.ModelViewSet):
    """Threshold rules: per device, `metric operator threshold` with a cooldown and actions.

    An edit applies to the next message the device sends: rules are read on every message."""

    serializer_class = RuleSerializer
    filterset_class = RuleFilter
    search_fields = ["name", "description"]
    ordering_fields = ["name", "severity", "last_triggered_at", "created_at", "updated_at"]

    def get_queryset(self):
        return rule_list()

    def perform_create(self, serializer):
        serializer.instance = rule_create(**serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = rule_update(rule=serializer.instance, data=serializer.validated_data)

    def destroy(self, request, *args, **kwargs):
        try:
            rule_delete(rule=self.get_object())
        except RuleHasEvents as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=BacktestRequestSerializer,
        responses={status.HTTP_200_OK: BacktestResultSerializer},
        description="How many events the rule, or a draft of it (any of `operator`, `threshold`, "
        "`metric`, `cooldown_minutes` and the alarm options changed), would have raised and resolved on the "
        "readings stored in `[start, end)`, replayed through the rule's own state machine, with the first "
        f"few and when. Writes nothing. The range is at most {MAX_RANGE.days} days; at most {MAX_MATCHES} "
        "readings are replayed (`truncated` says when the cap was hit).",
    )
    @action(detail=True, methods=["post"])
    def backtest(self, request, pk=None):
        rule = self.get_object()
        params = BacktestRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        draft = copy.copy(rule)
        for name in DRAFT_FIELDS:
            if name in data:
                setattr(draft, name, data[name])
        if draft.cooldown_minutes is None:
            draft.cooldown_minutes = DEFAULT_COOLDOWN_MINUTES
        problems = alarm_problems(draft)
        if problems:
            raise serializers.ValidationError({name: [problem] for name, problem in problems})
        metric = data.get("metric") or rule.metric or rule.device.device_type.metric_name
        result = rule_backtest(
            device_id=rule.device_id,
            metric=metric,
            rule=draft,
            start=data["start"],
            end=data["end"],
            first=data["first"],
        )
        condition = {
            "metric": metric,
            "operator": draft.operator,
            "threshold": f"{draft.threshold:.4f}",
            "cooldown_minutes": draft.cooldown_minutes,
            # The alarm options the replay honoured, where they differ from the defaults.
            **{name: getattr(draft, name) for name in REPLAYED_OPTIONS if getattr(draft, name) != ALARM_DEFAULTS[name]},
        }
        if condition.get("clear_threshold") is not None:
            condition["clear_threshold"] = f"{condition['clear_threshold']:.4f}"
        body = {
            "rule": rule.id,
            "start": data["start"],
            "end": data["end"],
            "condition": condition,
            "events": result.events,
            "resolved": result.resolved,
            "updates": result.updates,
            "matching_readings": result.matching_readings,
            "first_events": result.first_events,
            "truncated": result.truncated,
            "scanned_until": result.scanned_until,
        }
        return Response(BacktestResultSerializer(body).data)

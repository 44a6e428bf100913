"""The events API: `/api/v1/events/` (list with filters, detail) and the lifecycle steps
`POST {id}/acknowledge/` and `POST {id}/resolve/`.

Events are written by the rules engine only; the API reads them and moves them along
`new → acknowledged → resolved` (or `new → resolved`) through `iothub.events.services`. A step the
event's status does not allow is a 409 saying why; a `viewer` reads but cannot take steps (403).
"""

from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from iothub.api.filters import UtcDateTimeFilter
from iothub.events.models import Event, EventStatus
from iothub.events.selectors import event_list
from iothub.events.services import MAX_NOTE_LENGTH, EventTransitionRefused, event_acknowledge, event_resolve
from iothub.rules.models import Severity


class EventSerializer(serializers.ModelSerializer):
    device = serializers.UUIDField(source="rule.device_id", read_only=True, help_text="The rule's device.")
    # Null until someone takes the step (and after that user is deleted).
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    resolved_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    execution_results = serializers.JSONField(
        read_only=True,
        help_text="One entry per action of the rule, in order: `type`, what it acts on (`template_id`, "
        "`machine_id`), `status` (`pending`, `completed`, `failed`) and, once done, `completed_at` or "
        "`error` and `failed_at`.",
    )
    metadata = serializers.JSONField(
        read_only=True, help_text="The reading, the rule and the device as they were when the event was raised."
    )

    resolved_by_system = serializers.BooleanField(
        read_only=True,
        help_text="True when the hub resolved the event itself (auto-resolve; a nodata rule hearing again); "
        "`resolved_telemetry_id` and `resolved_value` name the reading that cleared it.",
    )
    occurrences = serializers.IntegerField(
        read_only=True, help_text="Breaches folded into this event while it was open (`dedupe_while_open`), 1 first."
    )
    last_value = serializers.JSONField(read_only=True, help_text="The latest breaching value.")
    resolved_value = serializers.JSONField(read_only=True, help_text="The clearing reading's value.")

    class Meta:
        model = Event
        fields = [
            "id",
            "rule",
            "device",
            "telemetry_id",
            "timestamp",
            "severity",
            "status",
            "message",
            "execution_results",
            "metadata",
            "acknowledged_at",
            "acknowledged_by",
            "acknowledgement_note",
            "resolved_at",
            "resolved_by",
            "resolution_note",
            "resolved_by_system",
            "resolved_telemetry_id",
            "resolved_value",
            "occurrences",
            "last_value",
            "last_seen_at",
            "last_telemetry_id",
            "reminders_sent",
            "next_reminder_at",
            "escalation_due_at",
            "escalated_at",
        ]
        read_only_fields = fields


class EventTransitionSerializer(serializers.Serializer):
    note = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=MAX_NOTE_LENGTH,
        help_text="Optional: what was seen or done.",
    )


class EventFilter(filters.FilterSet):
    # distinct=False: django-filter's default SELECT DISTINCT guards against joins that repeat rows;
    # these are columns of the event itself, and DISTINCT over every column (JSON included) would
    # cost a sort of the whole filtered set.
    status = filters.MultipleChoiceFilter(choices=EventStatus.choices, distinct=False, help_text="Repeat for several.")
    severity = filters.MultipleChoiceFilter(choices=Severity.choices, distinct=False, help_text="Repeat for several.")
    device = filters.UUIDFilter(field_name="rule__device", help_text="Events of this device's rules.")
    start = UtcDateTimeFilter(field_name="timestamp", lookup_expr="gte", help_text="From (inclusive).")
    end = UtcDateTimeFilter(field_name="timestamp", lookup_expr="lt", help_text="Until (exclusive).")

    class Meta:
        model = Event
        fields = ["status", "severity", "device", "rule", "start", "end"]


_TRANSITION_RESPONSES = {
    status.HTTP_200_OK: EventSerializer,
    status.HTTP_403_FORBIDDEN: OpenApiResponse(description="The `viewer` role cannot change events."),
    status.HTTP_404_NOT_FOUND: OpenApiResponse(description="No such event."),
    status.HTTP_409_CONFLICT: OpenApiResponse(description="The event's status does not allow this step; says why."),
}


class EventViewSet(viewsets.ReadOnlyModelViewSet):
    """Events raised by rules, newest first, with what their actions did."""

    serializer_class = EventSerializer
    filterset_class = EventFilter
    search_fields = ["message"]
    ordering_fields = ["timestamp", "severity", "status", "id"]

    def get_queryset(self):
        return event_list()

    def _transition(self, request, pk, step):
        # 404 for an unknown event, before the step's own row lock.
        event = self.get_object()
        params = EventTransitionSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            event = step(event_id=event.id, user=request.user, note=params.validated_data.get("note"))
        except EventTransitionRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        event = self.get_queryset().get(pk=event.pk)
        return Response(self.get_serializer(event).data)

    @extend_schema(
        request=EventTransitionSerializer,
        responses=_TRANSITION_RESPONSES,
        description="`new → acknowledged`: someone is on it. Records who and when, and the note.",
    )
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, pk=None):
        return self._transition(request, pk, event_acknowledge)

    @extend_schema(
        request=EventTransitionSerializer,
        responses=_TRANSITION_RESPONSES,
        description="`new → resolved` or `acknowledged → resolved`: the cause is dealt with. Final.",
    )
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        return self._transition(request, pk, event_resolve)

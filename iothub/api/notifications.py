"""The notifications API: templates (CRUD and a preview) and deliveries (list, detail, retry).

Thin: validation uses the domain's own checks (`templating`, `recipients`), writes go through
`iothub.notifications.services`.
"""

from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.validators import UniqueValidator

from iothub.events.models import Event
from iothub.notifications.models import DeliveryStatus, NotificationDelivery, NotificationTemplate, RecipientType
from iothub.notifications.selectors import (
    event_with_context_relations,
    notification_context,
    notification_delivery_list,
)
from iothub.notifications.services import (
    DEFAULT_PRIORITY,
    DEFAULT_RETRY_COUNT,
    DEFAULT_RETRY_DELAY_MINUTES,
    PRIORITY_MAX,
    PRIORITY_MIN,
    RETRY_COUNT_MAX,
    RETRY_COUNT_MIN,
    RETRY_DELAY_MINUTES_MAX,
    RETRY_DELAY_MINUTES_MIN,
    DeliveryNotRetryable,
    TemplateInUse,
    notification_delivery_retry,
    notification_template_create,
    notification_template_delete,
    notification_template_recipients_clean,
    notification_template_text_clean,
    notification_template_update,
)
from iothub.notifications.templating import (
    PLACEHOLDERS,
    SAMPLE_CONTEXT,
    template_render,
)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


def _defaults_for_nulls(data: dict, defaults: dict) -> dict:
    """The spec's nullable columns read NULL as their default."""
    for field, default in defaults.items():
        if field in data and data[field] is None:
            data[field] = default
    return data


# ------------------------------------------------------------------------------------------------
# Templates
# ------------------------------------------------------------------------------------------------


class NotificationTemplateSerializer(serializers.ModelSerializer):
    name = serializers.CharField(
        max_length=100,
        validators=[UniqueValidator(NotificationTemplate.objects.all(), message="A template with this name exists.")],
    )
    message_template = serializers.CharField(
        help_text="Text with {placeholders}: " + ", ".join(PLACEHOLDERS) + ". Write {{ and }} for literal braces.",
        trim_whitespace=False,
    )
    recipients = serializers.JSONField(
        help_text='A list of {"type": "email", "address"}, {"type": "sms", "phone"} (E.164) or '
        '{"type": "webhook", "url"}, each with an optional "name".'
    )
    priority = serializers.IntegerField(
        min_value=PRIORITY_MIN, max_value=PRIORITY_MAX, default=DEFAULT_PRIORITY, help_text="Lower is sent first."
    )
    retry_count = serializers.IntegerField(
        min_value=RETRY_COUNT_MIN,
        max_value=RETRY_COUNT_MAX,
        default=DEFAULT_RETRY_COUNT,
        help_text="Retries after a failed first attempt.",
    )
    retry_delay_minutes = serializers.IntegerField(
        min_value=RETRY_DELAY_MINUTES_MIN, max_value=RETRY_DELAY_MINUTES_MAX, default=DEFAULT_RETRY_DELAY_MINUTES
    )
    is_active = serializers.BooleanField(default=True)

    class Meta:
        model = NotificationTemplate
        fields = [
            "id",
            "name",
            "message_template",
            "recipients",
            "priority",
            "retry_count",
            "retry_delay_minutes",
            "is_active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_message_template(self, value: str) -> str:
        return notification_template_text_clean(value)

    def validate_recipients(self, value: object) -> list[dict]:
        return notification_template_recipients_clean(value)

    def to_representation(self, instance):
        return _defaults_for_nulls(
            super().to_representation(instance),
            {
                "priority": DEFAULT_PRIORITY,
                "retry_count": DEFAULT_RETRY_COUNT,
                "retry_delay_minutes": DEFAULT_RETRY_DELAY_MINUTES,
                "is_active": True,
            },
        )


class NotificationPreviewSerializer(serializers.Serializer):
    template_id = serializers.IntegerField()
    event_id = serializers.IntegerField(allow_null=True, help_text="Null when the sample event was used.")
    rendered = serializers.CharField()
    context = serializers.DictField(child=serializers.CharField(allow_blank=True))


class NotificationTemplateViewSet(viewsets.ModelViewSet):
    """Notification templates: the message, the default recipients, priority and retries."""

    queryset = NotificationTemplate.objects.all().order_by("name")
    serializer_class = NotificationTemplateSerializer
    filterset_fields = ["is_active"]
    search_fields = ["name"]
    ordering_fields = ["name", "priority", "created_at", "updated_at"]

    def perform_create(self, serializer):
        serializer.instance = notification_template_create(**serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = notification_template_update(
            template=serializer.instance, changes=serializer.validated_data
        )

    def perform_destroy(self, instance):
        try:
            notification_template_delete(template=instance)
        except TemplateInUse as exc:
            raise Conflict(str(exc)) from None

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "event", OpenApiTypes.INT, description="Render for this event; without it, for a sample event."
            )
        ],
        responses={200: NotificationPreviewSerializer},
    )
    @action(detail=True, methods=["get"])
    def preview(self, request, pk=None):
        """The template rendered for an event, or for a sample event, as a delivery would carry it."""
        template = self.get_object()
        raw_event = request.query_params.get("event")
        if raw_event in (None, ""):
            event_id, context = None, dict(SAMPLE_CONTEXT)
        else:
            try:
                event_id = int(raw_event)
                event = event_with_context_relations(event_id=event_id)
            except (ValueError, Event.DoesNotExist):
                raise serializers.ValidationError({"event": [f"No event with id {raw_event!r}."]}) from None
            context = notification_context(event=event)
        return Response(
            {
                "template_id": template.id,
                "event_id": event_id,
                "rendered": template_render(template.message_template, context),
                "context": context,
            }
        )


# ------------------------------------------------------------------------------------------------
# Deliveries
# ------------------------------------------------------------------------------------------------


class NotificationDeliverySerializer(serializers.ModelSerializer):
    template_name = serializers.CharField(source="template.name", read_only=True)

    class Meta:
        model = NotificationDelivery
        fields = [
            "id",
            "event",
            "template",
            "template_name",
            "recipient_type",
            "recipient_address",
            "recipient_name",
            "rendered_message",
            "status",
            "priority",
            "attempt_count",
            "last_attempt_at",
            "error_message",
            "sent_at",
            "created_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance):
        return _defaults_for_nulls(super().to_representation(instance), {"priority": 1, "attempt_count": 0})


class NotificationDeliveryFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=DeliveryStatus.choices)
    recipient_type = filters.ChoiceFilter(choices=RecipientType.choices)
    event = filters.NumberFilter(field_name="event_id")
    template = filters.NumberFilter(field_name="template_id")

    class Meta:
        model = NotificationDelivery
        fields = ["status", "recipient_type", "event", "template"]


class NotificationDeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    """What was (or will be) sent to whom, when, and how it went."""

    queryset = notification_delivery_list()
    serializer_class = NotificationDeliverySerializer
    filterset_class = NotificationDeliveryFilter
    search_fields = ["recipient_address", "recipient_name"]
    ordering_fields = ["created_at", "priority", "last_attempt_at", "sent_at"]

    @extend_schema(
        request=None,
        responses={
            200: NotificationDeliverySerializer,
            409: OpenApiResponse(
                inline_serializer("DeliveryRetryConflict", {"detail": serializers.CharField()}),
                description="The delivery is not failed (it is pending or was sent).",
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Send a failed delivery again, with a fresh attempt budget. Operators only."""
        delivery = self.get_object()
        try:
            delivery = notification_delivery_retry(delivery_id=delivery.id)
        except DeliveryNotRetryable as exc:
            raise Conflict(str(exc)) from None
        return Response(self.get_serializer(delivery).data)

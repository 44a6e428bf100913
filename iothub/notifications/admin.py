"""Notification templates and deliveries in the Django admin.

Templates are validated by the same domain code as the API (placeholders by `templating`,
recipients by `iothub.recipients`, the bounds of the services); deliveries are a read-only record
of what was sent to whom (a failed one is sent again through the API's retry, which resets its
attempt budget).
"""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from iothub.notifications.models import NotificationDelivery, NotificationTemplate
from iothub.notifications.services import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    RETRY_COUNT_MAX,
    RETRY_COUNT_MIN,
    RETRY_DELAY_MINUTES_MAX,
    RETRY_DELAY_MINUTES_MIN,
    notification_template_recipients_clean,
    notification_template_text_clean,
)


def _bounded(value: int | None, low: int, high: int) -> int | None:
    if value is not None and not low <= value <= high:
        raise ValidationError(f"must be between {low} and {high}")
    return value


class NotificationTemplateForm(forms.ModelForm):
    class Meta:
        model = NotificationTemplate
        fields = [
            "name",
            "message_template",
            "recipients",
            "priority",
            "retry_count",
            "retry_delay_minutes",
            "is_active",
        ]

    def clean_message_template(self):
        return notification_template_text_clean(self.cleaned_data["message_template"])

    def clean_recipients(self):
        return notification_template_recipients_clean(self.cleaned_data["recipients"])

    def clean_priority(self):
        return _bounded(self.cleaned_data["priority"], PRIORITY_MIN, PRIORITY_MAX)

    def clean_retry_count(self):
        return _bounded(self.cleaned_data["retry_count"], RETRY_COUNT_MIN, RETRY_COUNT_MAX)

    def clean_retry_delay_minutes(self):
        return _bounded(self.cleaned_data["retry_delay_minutes"], RETRY_DELAY_MINUTES_MIN, RETRY_DELAY_MINUTES_MAX)


@admin.register(NotificationTemplate)
class NotificationTemplateAdmin(admin.ModelAdmin):
    form = NotificationTemplateForm
    list_display = ["name", "priority", "retry_count", "retry_delay_minutes", "is_active", "updated_at"]
    list_filter = ["is_active", "priority"]
    search_fields = ["name", "message_template"]
    readonly_fields = ["created_at", "updated_at"]


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "event",
        "recipient_type",
        "recipient_address",
        "status",
        "priority",
        "attempt_count",
        "last_attempt_at",
        "sent_at",
    ]
    list_filter = ["status", "recipient_type", "priority"]
    search_fields = ["recipient_address", "recipient_name", "error_message"]
    date_hierarchy = "created_at"
    list_select_related = ["event", "template"]
    raw_id_fields = ["event", "template"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

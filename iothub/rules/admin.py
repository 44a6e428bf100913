"""Rules in the Django admin, validated by the same domain code as the API
(`iothub.rules.actions.action_config_validate` and the rule services' checks)."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from iothub.rules.actions import action_config_validate
from iothub.rules.models import Rule
from iothub.rules.services import MAX_COOLDOWN_MINUTES, METRIC_NAME


class RuleForm(forms.ModelForm):
    class Meta:
        model = Rule
        fields = [
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
        ]

    def clean_action_config(self):
        config = self.cleaned_data["action_config"]
        try:
            return action_config_validate(config)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["action_config"]) from None

    def clean_metric(self):
        metric = self.cleaned_data["metric"] or None
        if metric is not None and not METRIC_NAME.fullmatch(metric):
            raise ValidationError(f"{metric!r} is not a metric name: a letter, then letters, digits, _ . -")
        return metric

    def clean_cooldown_minutes(self):
        minutes = self.cleaned_data["cooldown_minutes"]
        if minutes is not None and not 0 <= minutes <= MAX_COOLDOWN_MINUTES:
            raise ValidationError(f"must be between 0 and {MAX_COOLDOWN_MINUTES}")
        return minutes


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    form = RuleForm
    list_display = ["name", "device", "metric", "operator", "threshold", "severity", "is_enabled", "last_triggered_at"]
    list_filter = ["is_enabled", "severity", "operator"]
    list_select_related = ["device"]
    search_fields = ["name", "description", "device__name", "device__serial_number"]
    readonly_fields = ["id", "last_triggered_at", "created_at", "updated_at"]
    autocomplete_fields = ["device"]

"""Rules in the Django admin, validated by the same domain code as the API
(`iothub.rules.actions.action_config_validate` and the rule services' checks)."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from iothub.rules.actions import action_config_validate
from iothub.rules.models import Rule
from iothub.rules.services import ALARM_DEFAULTS, ALARM_FIELDS, MAX_COOLDOWN_MINUTES, METRIC_NAME, alarm_problems


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
            *ALARM_FIELDS,
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The alarm options are optional: left empty, each takes the default that keeps the spec's behaviour.
        for name in ALARM_FIELDS:
            self.fields[name].required = False

    def clean(self):
        cleaned = super().clean()
        for name, default in ALARM_DEFAULTS.items():
            if cleaned.get(name) is None and name not in self.errors:
                cleaned[name] = default
        draft = Rule(**{name: cleaned[name] for name in self.Meta.fields if name in cleaned and name != "device"})
        for name, problem in alarm_problems(draft):
            if name in self.fields and name not in self.errors:
                self.add_error(name, problem)
        return cleaned

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

"""The dashboard's forms for rules and notification templates.

Each is a Django `ModelForm` over the domain's model, so the fields, labels, choices and widgets
come from the model, and the field list is the one the API accepts (the serializer's writable
fields). A form
holds no validation rules of its own: a bound form hands the posted data, as it is, to the
serializer the API validates with (which calls the domain's checks), and shows that serializer's
errors beside the fields they name. So a rule or a template is accepted or refused by the dashboard
exactly as by `POST /api/v1/rules/`, and a new check added there applies here too.
"""

from datetime import timedelta

from django import forms
from django.core.exceptions import ValidationError
from django.forms.utils import ErrorDict
from rest_framework import serializers

from iothub.api.notifications import NotificationTemplateSerializer
from iothub.api.rules import RuleSerializer
from iothub.notifications.models import NotificationTemplate
from iothub.rules.models import Rule

JSON_ATTRS = {"rows": 4, "spellcheck": "false", "class": "json"}


class SerializerValidatedForm(forms.ModelForm):
    """A model form whose validation is the API serializer's (`serializer_class`).

    `cleaned_data` is the serializer's `validated_data`, which the API's services take as they are.
    The browser's own checks (`required`) are off: the server judges, and says why.
    """

    serializer_class: type[serializers.ModelSerializer]
    use_required_attribute = False

    def full_clean(self) -> None:
        self._errors = ErrorDict()
        self.cleaned_data = {}
        if not self.is_bound:
            return
        instance = None if self.instance._state.adding else self.instance
        serializer = self.serializer_class(instance=instance, data=self._posted())
        if serializer.is_valid():
            self.cleaned_data = dict(serializer.validated_data)
        else:
            for name, messages in serializer.errors.items():
                self.add_error(name if name in self.fields else None, [str(m) for m in _flat(messages)])

    def _posted(self):
        """The posted data as the serializer should read a browser's form. Two things a browser
        means differ from what DRF assumes: an unchecked checkbox is left out of the post, which
        DRF reads as the field's default (true for `is_enabled`), so it is sent as false; and a
        blank JSON box is parsed as JSON and fails, so it is left out, meaning "not given": the
        serializer applies its default (null) or says the field is required."""
        data = self.data.copy()
        for name, field in self.fields.items():
            if isinstance(field.widget, forms.CheckboxInput):
                data[name] = "true" if field.widget.value_from_datadict(self.data, self.files, name) else "false"
            elif isinstance(field, forms.JSONField) and not str(data.get(name, "")).strip():
                data.pop(name, None)
        return data

    def add_service_error(self, error: ValidationError) -> None:
        """Show a service's refusal (a Django `ValidationError` naming fields) on the form."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for name, messages in error.message_dict.items():
            self.add_error(name if name in self.fields else None, messages)


def _flat(messages) -> list:
    """DRF's error details as a flat list (nested ones come as dicts of lists)."""
    if isinstance(messages, dict):
        return [f"{key}: {m}" for key, value in messages.items() for m in _flat(value)]
    if isinstance(messages, list):
        return [m for item in messages for m in _flat(item)]
    return [messages]


def writable_fields(serializer_class: type[serializers.ModelSerializer]) -> list[str]:
    """The fields a client may write through the API: the form's fields."""
    meta = serializer_class.Meta
    return [name for name in meta.fields if name not in meta.read_only_fields]


class RuleForm(SerializerValidatedForm):
    serializer_class = RuleSerializer
    # The spec's nullable `is_enabled` reads NULL as disabled: a checkbox, not a three-way choice.
    is_enabled = forms.BooleanField(required=False, initial=True, label="Enabled")

    class Meta:
        model = Rule
        fields = writable_fields(RuleSerializer)
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "action_config": forms.Textarea(attrs=JSON_ATTRS),
        }
        help_texts = {
            "metric": "Empty: the device type's primary metric.",
            "cooldown_minutes": "Minimum time between two events of this rule; 0: every matching reading.",
            "action_config": 'A JSON list, e.g. [{"type": "notification", "template_id": 1}, '
            '{"type": "stop_machine", "machine_id": "M-123"}]',
        }


BACKTEST_RANGES = {"1": timedelta(days=1), "7": timedelta(days=7), "31": timedelta(days=31)}


class BacktestRangeForm(forms.Form):
    """How far back a rule's preview replays the stored readings."""

    backtest_days = forms.ChoiceField(
        choices=[("1", "the last 24 hours"), ("7", "the last 7 days"), ("31", "the last 31 days")],
        initial="7",
        required=False,
        label="Backtest over",
    )

    def span(self) -> timedelta:
        chosen = self.cleaned_data.get("backtest_days") if self.is_valid() else None
        return BACKTEST_RANGES.get(chosen or "7")


class NotificationTemplateForm(SerializerValidatedForm):
    serializer_class = NotificationTemplateSerializer
    is_active = forms.BooleanField(required=False, initial=True, label="Active")

    class Meta:
        model = NotificationTemplate
        fields = writable_fields(NotificationTemplateSerializer)
        widgets = {
            "message_template": forms.Textarea(attrs={"rows": 4}),
            "recipients": forms.Textarea(attrs=JSON_ATTRS),
        }
        help_texts = {
            "recipients": 'A JSON list, e.g. [{"type": "email", "address": "ops@example.com"}, '
            '{"type": "sms", "phone": "+380501234567"}, {"type": "webhook", "url": "https://..."}]',
        }


class TemplatePreviewForm(forms.Form):
    """Which event a template's preview is rendered for; none: the sample event."""

    event = forms.IntegerField(
        required=False, min_value=1, label="Preview for event", help_text="An event's id; empty: a sample event."
    )

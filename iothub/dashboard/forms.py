"""The dashboard's forms for rules and notification templates.

Each is a Django `ModelForm` over the domain's model, so the labels, choices and widgets come from
the model, and the field list is the one the API accepts (the serializer's writable fields). A form
holds no validation rules of its own: a bound form hands the posted data to the serializer the API
validates with (which calls the domain's checks), and shows that serializer's errors beside the
fields they name. So a rule or a template is accepted or refused by the dashboard exactly as by
`POST /api/v1/rules/`, and a new field or check added there applies here too.
"""

from datetime import timedelta

from django import forms
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.forms.utils import ErrorDict
from rest_framework import serializers

from iothub.api.errors import integrity_detail
from iothub.api.notifications import NotificationTemplateSerializer
from iothub.api.rules import RuleSerializer
from iothub.notifications.models import NotificationTemplate
from iothub.rules.models import Rule
from iothub.rules.services import ALARM_FIELDS

JSON_ATTRS = {"rows": 4, "spellcheck": "false", "class": "json"}


class SerializerValidatedForm(forms.ModelForm):
    """A model form whose validation is the API serializer's (`serializer_class`).

    `cleaned_data` is the serializer's `validated_data`, which the API's services take as they are.
    The browser's own checks (`required`) are off: the server judges, and says why.
    """

    serializer_class: type[serializers.ModelSerializer]
    use_required_attribute = False
    # Titled groups of fields, for the page: (title, names); the fields left over come first.
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # What each field means is written once, for the API's schema; the form shows the same.
        for name, target in self.serializer_class().fields.items():
            if name in self.fields and not self.fields[name].help_text and target.help_text:
                self.fields[name].help_text = target.help_text.replace("`", "")  # markdown in the schema

    def fieldsets(self) -> list[tuple[str | None, list]]:
        grouped = {name for _, names in self.groups for name in names}
        sets = [(None, [self[name] for name in self.fields if name not in grouped])]
        sets += [(title, [self[name] for name in names if name in self.fields]) for title, names in self.groups]
        return [(title, fields) for title, fields in sets if fields]

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
        """The posted data as the serializer should read a browser's form. What a browser means
        differs from what DRF assumes in three ways. An unchecked checkbox is left out of the post,
        which DRF reads as the field's default (true for `is_enabled`): it is sent as false. A
        blank JSON box, which DRF parses as JSON and fails, and a blank box of an optional field
        that cannot be null both mean "not given": they are left out, as a JSON body would leave
        them out, so the serializer applies its default or says the field is required."""
        data = self.data.copy()
        targets = self.serializer_class().fields
        for name, field in self.fields.items():
            if isinstance(field.widget, forms.CheckboxInput):
                data[name] = "true" if field.widget.value_from_datadict(self.data, self.files, name) else "false"
                continue
            if name not in data or str(data.get(name)).strip():
                continue
            target = targets[name]
            if isinstance(field, forms.JSONField) or not (target.required or target.allow_null):
                data.pop(name)
        return data

    def add_conflict(self, error: IntegrityError) -> None:
        """A save the database refused as conflicting with a row saved meanwhile, shown beside the
        field PostgreSQL's detail names ("Key (name)=(Ops email) already exists.")."""
        detail = integrity_detail(error)
        column = _key_column(detail)
        message = f"It conflicts with a record saved meanwhile and was not saved. {detail}".strip()
        self.add_error(column if column in self.fields else None, message)

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


class OptionalJSONField(forms.JSONField):
    """A JSON box for a nullable field: empty rather than `null` when there is nothing."""

    def prepare_value(self, value):
        return "" if value is None else super().prepare_value(value)


def writable_fields(serializer_class: type[serializers.ModelSerializer]) -> list[str]:
    """The fields a client may write through the API, in the API's order: the form's fields."""
    return [name for name, field in serializer_class().fields.items() if not field.read_only]


class RuleForm(SerializerValidatedForm):
    serializer_class = RuleSerializer
    groups = (("Alarm options", ALARM_FIELDS),)
    # The spec's nullable `is_enabled` reads NULL as disabled: a checkbox, not a three-way choice.
    is_enabled = forms.BooleanField(required=False, initial=True, label="Enabled")

    class Meta:
        model = Rule
        fields = writable_fields(RuleSerializer)
        field_classes = {"escalation": OptionalJSONField}
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "action_config": forms.Textarea(attrs=JSON_ATTRS),
            "escalation": forms.Textarea(attrs={**JSON_ATTRS, "rows": 1}),
        }
        help_texts = {
            "metric": "Empty: the device type's primary metric.",
            "cooldown_minutes": "Minimum time between two events of this rule; 0: every matching reading.",
            "action_config": 'A JSON list, e.g. [{"type": "notification", "template_id": 1}, '
            '{"type": "stop_machine", "machine_id": "M-123"}]',
            "escalation": 'JSON, e.g. {"after_minutes": 30, "template_id": 2}; empty: no escalation.',
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


def _key_column(detail: str) -> str | None:
    """The column of a unique violation's detail, "Key (name)=(...) already exists." -> "name"."""
    if detail.startswith("Key (") and ")=(" in detail:
        return detail[len("Key (") : detail.index(")=(")]
    return None

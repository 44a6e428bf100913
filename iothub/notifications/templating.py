"""Notification message templates: the placeholders they may use, their validation and rendering.

Pure functions, no database. A template is text with `{placeholder}` fields from `PLACEHOLDERS`;
`{{` and `}}` write literal braces. Parsing is the standard library's `string.Formatter().parse`,
but rendering never calls `str.format`: each field is looked up by its exact name in a dictionary
of strings, so `{device.__class__}`, `{metric[0]}`, conversions (`!r`) and format specs (which can
nest fields and pad to any width) are rejected when the template is saved and can do nothing at
render time.
"""

import string
from collections.abc import Mapping

# The documented placeholders (docs/notifications.md), with what each renders as.
PLACEHOLDERS: dict[str, str] = {
    "device_name": "The device's name, e.g. Press 3",
    "serial_number": "The device's serial number, e.g. VIB-SN-001",
    "location": "Where the device is, e.g. Workshop A (empty when unknown)",
    "device_type": "The device type's name, e.g. vibration_sensor",
    "metric": "The metric the rule read, e.g. vibration",
    "value": "The value that triggered the rule, e.g. 30.2",
    "unit": "The metric's unit, e.g. mm_s (empty when the metric is not the type's primary one)",
    "operator": "The rule's comparison as a symbol: >, <, >=, <=, =, !=",
    "threshold": "The rule's threshold, e.g. 25",
    "rule_name": "The rule's name",
    "severity": "The event's severity: critical, warning or info",
    "event_id": "The event's id",
    "event_message": "The event's own message, as the rules engine wrote it",
    "timestamp": "When the event happened, ISO 8601 in UTC",
    "event_url": "A link to the event in the hub",
}

# A bound on template size: long enough for any email, short enough to keep rows small.
MAX_TEMPLATE_LENGTH = 4000

_formatter = string.Formatter()


class TemplateError(ValueError):
    """A template that cannot be saved; the message says what is wrong and where."""


def template_fields(text: str) -> list[tuple[str, str | None]]:
    """The template as (literal text, placeholder name or None) pairs; raises TemplateError.

    The literal text already has `{{`/`}}` turned into single braces.
    """
    if len(text) > MAX_TEMPLATE_LENGTH:
        raise TemplateError(f"The template is {len(text)} characters long; at most {MAX_TEMPLATE_LENGTH} are allowed.")
    try:
        parsed = list(_formatter.parse(text))
    except ValueError as exc:
        raise TemplateError(f"Unbalanced braces ({exc}); write {{{{ and }}}} for literal braces.") from None
    pieces: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is None:
            pieces.append((literal, None))
            continue
        shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if field == "" or field.isdigit():
            raise TemplateError(f"{shown}: placeholders are named, e.g. {{device_name}}.")
        if "." in field or "[" in field:
            raise TemplateError(f"{shown}: attribute and index access are not allowed; use a placeholder as listed.")
        if not field.isidentifier():
            raise TemplateError(f"{shown}: not a placeholder name; write one as listed, e.g. {{device_name}}.")
        if conversion or spec:
            raise TemplateError(f"{shown}: conversions (!r) and format specs (:...) are not allowed.")
        if field not in PLACEHOLDERS:
            raise TemplateError(f"{shown}: unknown placeholder; the known ones are {', '.join(PLACEHOLDERS)}.")
        pieces.append((literal, field))
    return pieces


def template_validate(text: str) -> None:
    """Raise TemplateError if the template cannot be saved."""
    template_fields(text)


def template_render(text: str, context: Mapping[str, str]) -> str:
    """Render a template with the values in `context` (strings, by placeholder name).

    Never raises for a template that was saved valid. One that was not (written to the table
    directly) still renders: a field that cannot be filled stays as written, and a template that
    does not parse is returned as it is, so a bad template cannot stop an event's notifications.
    """
    try:
        pieces = list(_formatter.parse(text))
    except ValueError:
        return text
    out: list[str] = []
    for literal, field, spec, conversion in pieces:
        out.append(literal)
        if field is None:
            continue
        if field in context and not spec and not conversion:
            out.append(str(context[field]))
        else:
            out.append("{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    return "".join(out)


# What a preview shows when no event is given: a plausible vibration alarm.
SAMPLE_CONTEXT: dict[str, str] = {
    "device_name": "Press 3",
    "serial_number": "VIB-SN-001",
    "location": "Workshop A",
    "device_type": "vibration_sensor",
    "metric": "vibration",
    "value": "30.2",
    "unit": "mm_s",
    "operator": ">",
    "threshold": "25",
    "rule_name": "Vibration too high",
    "severity": "critical",
    "event_id": "42",
    "event_message": "vibration 30.2 > 25 on Press 3 (VIB-SN-001)",
    "timestamp": "2025-01-21T10:00:00Z",
    "event_url": "http://localhost:8000/api/v1/events/42/",
}

"""Template validation and rendering: pure functions, no database."""

import pytest

from iothub.notifications.templating import (
    MAX_TEMPLATE_LENGTH,
    PLACEHOLDERS,
    SAMPLE_CONTEXT,
    TemplateError,
    template_render,
    template_validate,
)

DOCUMENTED = {
    "device_name",
    "serial_number",
    "location",
    "device_type",
    "metric",
    "value",
    "unit",
    "operator",
    "threshold",
    "rule_name",
    "severity",
    "event_id",
    "timestamp",
    "event_url",
}


def test_every_documented_placeholder_is_known_and_has_a_sample():
    assert set(PLACEHOLDERS) >= DOCUMENTED
    assert set(PLACEHOLDERS) == set(SAMPLE_CONTEXT)


def test_renders_placeholders_from_the_context():
    text = "{severity}: {device_name} at {location} reads {metric} {value} {unit} ({operator} {threshold})"
    assert template_render(text, SAMPLE_CONTEXT) == ("critical: Press 3 at Workshop A reads vibration 30.2 mm_s (> 25)")


def test_doubled_braces_render_as_literal_braces():
    template_validate("{{literal}} {device_name} }}")
    assert template_render("{{literal}} {device_name} }}", SAMPLE_CONTEXT) == "{literal} Press 3 }"


def test_a_value_containing_braces_is_not_rendered_again():
    context = dict(SAMPLE_CONTEXT, device_name="{event_url}")
    assert template_render("{device_name}", context) == "{event_url}"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{nope}", "unknown placeholder"),
        ("{device_name.__class__}", "attribute and index access"),
        ("{device_name[0]}", "attribute and index access"),
        ("{device_name!r}", "conversions"),
        ("{value:>99999}", "format specs"),
        ("{value:{unit}}", "format specs"),
        ("{}", "placeholders are named"),
        ("{0}", "placeholders are named"),
        ("{ device_name }", "not a placeholder name"),
        ("unbalanced {device_name", "Unbalanced braces"),
        ("unbalanced } brace", "Unbalanced braces"),
    ],
)
def test_invalid_templates_are_rejected_saying_why(text, says):
    with pytest.raises(TemplateError, match=says.replace("[", r"\[")):
        template_validate(text)


def test_unknown_placeholder_error_names_it_and_lists_the_known_ones():
    with pytest.raises(TemplateError) as info:
        template_validate("Hello {devise_name}")
    assert "{devise_name}" in str(info.value)
    assert "device_name" in str(info.value)


def test_overlong_template_is_rejected():
    with pytest.raises(TemplateError, match=str(MAX_TEMPLATE_LENGTH)):
        template_validate("x" * (MAX_TEMPLATE_LENGTH + 1))


def test_rendering_never_uses_attribute_access_even_on_an_unvalidated_template():
    # A template written to the table directly is rendered without evaluating anything.
    assert template_render("{device_name.__class__} {nope} {value}", SAMPLE_CONTEXT) == (
        "{device_name.__class__} {nope} 30.2"
    )
    assert template_render("broken {", SAMPLE_CONTEXT) == "broken {"

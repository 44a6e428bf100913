"""Validation of `action_config`, shared by the API and the admin."""

import pytest
from django.core.exceptions import ValidationError

from iothub.notifications.models import NotificationTemplate
from iothub.rules.actions import action_config_validate, action_shape_problem


@pytest.fixture
def template(db):
    return NotificationTemplate.objects.create(
        name="vibration alert", message_template="{message}", recipients=[{"type": "email", "address": "a@b.com"}]
    )


def problems(config) -> list[str]:
    with pytest.raises(ValidationError) as info:
        action_config_validate(config)
    return info.value.message_dict["action_config"]


def test_the_specs_example_is_valid(template):
    config = [
        {"type": "notification", "template_id": template.id, "recipients": ["admin@company.com"]},
        {"type": "stop_machine", "machine_id": "M-123"},
    ]
    assert action_config_validate(config) == config


def test_recipients_may_be_objects_shaped_like_the_templates(template):
    config = [
        {
            "type": "notification",
            "template_id": template.id,
            "recipients": [
                {"type": "email", "address": "ops@company.com", "name": "Ops"},
                {"type": "sms", "phone": "+380501234567"},
                {"type": "webhook", "url": "https://hooks.example.com/services/X"},
            ],
        }
    ]
    assert action_config_validate(config) == config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "stop_machine"}, "must be a list of actions"),
        ([], "must hold at least one action"),
        ([{"type": "stop_machine", "machine_id": f"M-{i}"} for i in range(21)], "the limit is 20"),
        (["stop"], "[0]: must be an object"),
        ([{"type": "reboot"}], "[0].type: 'reboot' is not a known action"),
        ([{"machine_id": "M-1"}], "[0].type: None is not a known action"),
        ([{"machine_id": "", "type": {}}], "[0].type: {} is not a known action"),
        ([{"type": ["notification"]}], "[0].type: ['notification'] is not a known action"),
        ([{"type": "stop_machine"}], "[0].machine_id: is required"),
        ([{"type": "stop_machine", "machine_id": ""}], "[0].machine_id: must be a non-empty string"),
        ([{"type": "stop_machine", "machine_id": "   "}], "[0].machine_id: must be a non-empty string"),
        ([{"type": "stop_machine", "machine_id": 123}], "[0].machine_id: must be a non-empty string"),
        ([{"type": "stop_machine", "machine_id": "M-1\n"}], "[0].machine_id: must not start or end"),
        ([{"type": "stop_machine", "machine_id": "M" * 256}], "[0].machine_id: is 256 characters long"),
        ([{"type": "stop_machine", "machine_id": "M-1", "machine": "M-2"}], "[0].machine: unknown key"),
        ([{"type": "notification"}], "[0].template_id: is required"),
        ([{"type": "notification", "template_id": "5"}], "[0].template_id: must be the integer id"),
        ([{"type": "notification", "template_id": True}], "[0].template_id: must be the integer id"),
        ([{"type": "notification", "template_id": 999999}], "[0].template_id: notification template 999999 does not"),
    ],
)
@pytest.mark.django_db
def test_invalid_configs_are_refused_naming_the_action_and_key(config, message):
    found = problems(config)
    assert any(p.startswith(message) or message in p for p in found), found


@pytest.mark.parametrize(
    ("recipients", "path", "phrase"),
    [
        ("admin@company.com", "[0].recipients", "must be a list"),
        (["not-an-email"], "[0].recipients[0]", "not a valid email address"),
        ([42], "[0].recipients[0]", "must be an object"),
        ([{"type": "pager", "number": "1"}], "[0].recipients[0].type", "must be one of email, sms, webhook"),
        ([{"type": "email"}], "[0].recipients[0].address", "required for a email recipient"),
        ([{"type": "email", "address": "nope"}], "[0].recipients[0].address", "not a valid email address"),
        ([{"type": "sms", "phone": "call me"}], "[0].recipients[0].phone", "not an E.164 phone number"),
        # What the enqueue would refuse, refused when the rule is saved: E.164 needs its plus.
        ([{"type": "sms", "phone": "380501234567"}], "[0].recipients[0].phone", "not an E.164 phone number"),
        ([{"type": "webhook", "url": "ftp://x.example.com"}], "[0].recipients[0].url", "http"),
        ([{"type": "webhook", "url": "http://127.0.0.1/hook"}], "[0].recipients[0].url", "private"),
        ([{"type": "email", "address": "a@b.com", "cc": "c@d.com"}], "[0].recipients[0]", "unknown key(s) cc"),
        ([{"type": "email", "address": "a@b.com", "name": 5}], "[0].recipients[0].name", "must be a string"),
        (["a@b.com", "A@B.com"], "[0].recipients[1]", "the same recipient as [0].recipients[0]"),
    ],
)
def test_invalid_recipients_are_refused_naming_their_position(template, recipients, path, phrase):
    found = problems([{"type": "notification", "template_id": template.id, "recipients": recipients}])
    assert any(p.startswith(path + ":") and phrase in p for p in found), found


def test_a_loopback_webhook_is_accepted_where_the_setting_allows_it(template, settings):
    settings.IOTHUB_WEBHOOK_ALLOW_PRIVATE = True
    recipients = [{"type": "webhook", "url": "http://127.0.0.1:9000/hooks"}, "ops@example.com"]
    config = [{"type": "notification", "template_id": template.id, "recipients": recipients}]
    assert action_config_validate(config) == config


def test_an_inactive_template_is_refused(template):
    template.is_active = False
    template.save()
    assert problems([{"type": "notification", "template_id": template.id}]) == [
        f"[0].template_id: notification template {template.id} is not active"
    ]


def test_every_problem_is_reported_in_the_order_of_the_actions(template):
    found = problems(
        [
            {"type": "notification", "template_id": 999999},
            {"type": "stop_machine"},
            {"type": "notification", "template_id": template.id, "recipients": ["x"]},
        ]
    )
    assert [p.split(":")[0] for p in found] == ["[0].template_id", "[1].machine_id", "[2].recipients[0]"]


def test_the_shape_check_reads_no_database():
    # No `db` fixture: a query here would fail the test.
    assert action_shape_problem({"type": "notification", "template_id": 999999}) is None
    assert action_shape_problem({"type": "stop_machine"}) == "machine_id: is required for a stop_machine action"
    assert action_shape_problem("stop") == "must be an object with a `type`"

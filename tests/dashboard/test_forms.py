"""The dashboard's forms for rules and notification templates: operators create, edit, enable and
disable; bad input is refused naming the field and writes nothing; viewers read and are refused
on the server; drafts are previewed (a backtest, a rendered message) without being saved."""

import json
import re
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client

from iothub.events.models import Event
from iothub.notifications.models import NotificationTemplate
from iothub.notifications.services import notification_template_create
from iothub.rules.models import Rule, RuleState

pytestmark = pytest.mark.django_db


def rule_post(for_device, **changes) -> dict:
    """A rule form as a browser posts it (an unchecked checkbox is simply absent)."""
    data = {
        "device": str(for_device.id),
        "name": "Vibration high",
        "description": "",
        "metric": "",
        "operator": "gt",
        "threshold": "5.5",
        "severity": "critical",
        "cooldown_minutes": "15",
        "is_enabled": "on",
        "action_config": json.dumps([{"type": "stop_machine", "machine_id": "M-7"}]),
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def template_post(**changes) -> dict:
    data = {
        "name": "Ops email",
        "message_template": "{device_name}: {metric} = {value}",
        "recipients": json.dumps([{"type": "email", "address": "ops@example.com"}]),
        "priority": "1",
        "retry_count": "3",
        "retry_delay_minutes": "5",
        "is_active": "on",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def errors_named(response) -> set[str]:
    """The fields the page names as wrong (`data-error-for` in the form's error summary)."""
    return set(re.findall(r'data-error-for="([a-z_]+)"', response.content.decode()))


# --- Rules: create, edit, enable, disable -----------------------------------------------------------


def test_operator_creates_a_rule(operator_web, device):
    response = operator_web.post("/rules/new/", rule_post(device))

    rule = Rule.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/rules/{rule.id}/"
    assert (rule.name, rule.operator, rule.threshold, rule.severity, rule.is_enabled) == (
        "Vibration high",
        "gt",
        Decimal("5.5"),
        "critical",
        True,
    )
    assert rule.metric is None and rule.action_config == [{"type": "stop_machine", "machine_id": "M-7"}]


def test_operator_edits_a_rule_and_an_unchecked_box_disables_it(operator_web, device, rule):
    edited = rule_post(device, name="Renamed", threshold="20", is_enabled=None)
    response = operator_web.post(f"/rules/{rule.id}/", edited)

    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.name, rule.threshold, rule.is_enabled) == ("Renamed", Decimal("20"), False)


def test_operator_disables_and_enables_a_rule(operator_web, rule):
    response = operator_web.post(f"/rules/{rule.id}/disable/", {"next": "/rules/"})
    assert response.status_code == 302 and response["Location"] == "/rules/"
    rule.refresh_from_db()
    assert rule.is_enabled is False
    assert "disabled" in operator_web.get("/rules/").content.decode()

    operator_web.post(f"/rules/{rule.id}/enable/", {"next": "https://elsewhere.example/"})
    rule.refresh_from_db()
    assert rule.is_enabled is True


def test_enable_does_not_redirect_off_the_site(operator_web, rule):
    response = operator_web.post(f"/rules/{rule.id}/enable/", {"next": "https://elsewhere.example/"})

    assert response["Location"] == f"/rules/{rule.id}/"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"threshold": "lots"}, "threshold", "A valid number is required."),
        ({"name": ""}, "name", "This field may not be blank."),
        ({"operator": "about"}, "operator", "is not a valid choice"),
        ({"metric": "9lives"}, "metric", "is not a metric name"),
        ({"cooldown_minutes": "-1"}, "cooldown_minutes", "greater than or equal to 0"),
        ({"action_config": ""}, "action_config", "This field is required."),
        ({"action_config": "[{"}, "action_config", "Value must be valid JSON."),
        ({"action_config": '[{"type": "stop_machine"}]'}, "action_config", "[0].machine_id: is required"),
        ({"action_config": '[{"type": "notification", "template_id": 999}]'}, "action_config", "template_id"),
        ({"device": "00000000-0000-0000-0000-000000000000"}, "device", "does not exist"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_field_and_nothing_is_saved(operator_web, device, changes, field, message):
    response = operator_web.post("/rules/new/", rule_post(device, **changes))

    assert response.status_code == 400
    assert errors_named(response) == {field}
    assert message in response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')
    assert not Rule.objects.exists()


def test_a_bad_edit_changes_nothing(operator_web, device, rule):
    response = operator_web.post(f"/rules/{rule.id}/", rule_post(device, name="Changed", threshold="x"))

    assert response.status_code == 400 and errors_named(response) == {"threshold"}
    rule.refresh_from_db()
    assert (rule.name, rule.threshold) == ("High vibration", Decimal("15"))


@pytest.mark.parametrize(
    "changes",
    [
        {"threshold": "lots"},
        {"metric": "9lives", "cooldown_minutes": "999999999"},
        {"action_config": '[{"type": "notification", "template_id": 999, "recipients": ["not-an-email"]}]'},
        {"severity": "apocalyptic", "name": ""},
    ],
)
def test_the_form_refuses_what_the_api_refuses_naming_the_same_fields(operator_web, operator_client, device, changes):
    form = operator_web.post("/rules/new/", rule_post(device, **changes))
    body = rule_post(device, **changes)
    body["is_enabled"] = True
    body["action_config"] = (
        json.loads(body["action_config"]) if body["action_config"].startswith('[{"') else body["action_config"]
    )
    api = operator_client.post("/api/v1/rules/", body, format="json")

    assert (form.status_code, api.status_code) == (400, 400)
    assert errors_named(form) == set(api.json())


# --- Rules: who may ---------------------------------------------------------------------------------


def test_viewer_reads_a_rule_but_is_offered_no_form(viewer_web, rule):
    page = viewer_web.get(f"/rules/{rule.id}/").content.decode()

    assert "Creating, editing, enabling and disabling rules needs the operator role." in page
    assert 'name="csrfmiddlewaretoken"' not in page.split('id="rule-form"')[1]
    assert 'name="threshold"' in page and "disabled" in page.split('name="threshold"')[1].split(">")[0]
    assert "data-action=" not in page.split("</header>", 1)[1].replace('data-action="logout"', "")


@pytest.mark.parametrize("path", ["/rules/new/", "/templates/new/"])
def test_viewer_cannot_open_a_new_form(viewer_web, path):
    assert viewer_web.get(path).status_code == 403


def test_viewers_posts_are_refused_and_change_nothing(viewer_web, device, rule):
    assert viewer_web.post("/rules/new/", rule_post(device, name="Sneaky")).status_code == 403
    assert viewer_web.post(f"/rules/{rule.id}/", rule_post(device, name="Sneaky")).status_code == 403
    assert viewer_web.post(f"/rules/{rule.id}/disable/").status_code == 403

    rule.refresh_from_db()
    assert (rule.name, rule.is_enabled, Rule.objects.count()) == ("High vibration", True, 1)


def test_a_post_without_the_csrf_token_is_refused(operator_user, device):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator_user)

    assert client.post("/rules/new/", rule_post(device)).status_code == 403
    assert not Rule.objects.exists()


# --- Rules: the backtest preview ----------------------------------------------------------------------


def test_preview_backtests_the_draft_on_stored_readings_and_saves_nothing(operator_web, device, rule, hour_of_readings):
    # An hour of readings a minute apart cycling 4, 4.5, 5, 5.5, 6: twelve readings of 6, five
    # minutes apart. Above 5.5 with a 15 minute cooldown: the first, then every third: 4 events.
    draft = rule_post(device, threshold="5.5", cooldown_minutes="15", name="Draft", preview="1", backtest_days="1")
    response = operator_web.post(f"/rules/{rule.id}/", draft)

    page = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="backtest-events">4<' in page
    assert 'data-testid="backtest-matching">12<' in page
    assert page.count('data-testid="backtest-event"') == 4
    rule.refresh_from_db()
    assert (rule.name, rule.threshold) == ("High vibration", Decimal("15"))

    without_cooldown = operator_web.post("/rules/new/", {**draft, "cooldown_minutes": "0"}).content.decode()
    assert 'data-testid="backtest-events">12<' in without_cooldown
    assert Rule.objects.count() == 1


def test_preview_of_a_bad_draft_names_the_field_and_runs_nothing(operator_web, device):
    response = operator_web.post("/rules/new/", rule_post(device, threshold="x", preview="1"))

    assert response.status_code == 400 and errors_named(response) == {"threshold"}
    assert 'data-testid="backtest"' not in response.content.decode()


# --- Notification templates ----------------------------------------------------------------------------


def test_operator_creates_and_edits_a_template(operator_web):
    response = operator_web.post("/templates/new/", template_post())
    template = NotificationTemplate.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/templates/{template.id}/"
    assert template.recipients == [{"type": "email", "address": "ops@example.com"}]

    operator_web.post(f"/templates/{template.id}/", template_post(priority="0", is_active=None))
    template.refresh_from_db()
    assert (template.priority, template.is_active) == (0, False)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"message_template": "{device.__class__}"}, "message_template", "attribute and index access"),
        ({"message_template": "{nope}"}, "message_template", "unknown placeholder"),
        ({"message_template": "  "}, "message_template", "may not be blank"),
        ({"recipients": '[{"type": "sms", "phone": "12"}]'}, "recipients", "[0]"),
        ({"recipients": "not json"}, "recipients", "Value must be valid JSON."),
        ({"priority": "11"}, "priority", "less than or equal to 10"),
        ({"name": "Existing"}, "name", "A template with this name exists."),
    ],
)
def test_a_bad_template_is_refused_naming_the_field(operator_web, changes, field, message):
    notification_template_create(name="Existing", message_template="x", recipients=[])

    response = operator_web.post("/templates/new/", template_post(**changes))

    assert response.status_code == 400
    assert errors_named(response) == {field}
    assert message in response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')
    assert NotificationTemplate.objects.count() == 1


def test_operator_deactivates_and_activates_a_template_and_a_viewer_cannot(operator_web, viewer_web):
    template = notification_template_create(name="Ops", message_template="{device_name}", recipients=[])

    assert viewer_web.post(f"/templates/{template.id}/deactivate/").status_code == 403
    template.refresh_from_db()
    assert template.is_active is True

    response = operator_web.post(f"/templates/{template.id}/deactivate/", {"next": "/templates/"})
    assert response["Location"] == "/templates/"
    template.refresh_from_db()
    assert template.is_active is False
    assert 'data-testid="template-active">inactive<' in operator_web.get("/templates/").content.decode()

    operator_web.post(f"/templates/{template.id}/activate/")
    template.refresh_from_db()
    assert template.is_active is True


def test_template_preview_renders_the_draft_for_the_sample_and_for_an_event(operator_web, event):
    template = notification_template_create(name="Ops", message_template="old", recipients=[])
    draft = template_post(name="Ops", message_template="{device_name} {metric}={value} ({severity})", preview="1")

    sample = operator_web.post(f"/templates/{template.id}/", draft).content.decode()
    for_event = operator_web.post(f"/templates/{template.id}/", {**draft, "event": str(event.id)}).content.decode()

    assert '<pre class="rendered" data-testid="rendered">Press 3 vibration=30.2 (critical)</pre>' in sample
    assert '<pre class="rendered" data-testid="rendered">Press 3 vibration=16.2 (critical)</pre>' in for_event
    template.refresh_from_db()
    assert template.message_template == "old"


def test_template_preview_for_an_unknown_event_says_so(operator_web):
    response = operator_web.post("/templates/new/", template_post(preview="1", event="99999"))

    assert response.status_code == 400
    assert "No event with id 99999." in response.content.decode()


def test_viewer_sees_a_template_read_only_with_its_preview_and_cannot_post(viewer_web):
    template = notification_template_create(name="Ops", message_template="{device_name} alarm", recipients=[])

    page = viewer_web.get(f"/templates/{template.id}/").content.decode()
    response = viewer_web.post(f"/templates/{template.id}/", template_post(name="Hijacked"))

    assert "Press 3 alarm" in page and "needs the operator role" in page
    assert response.status_code == 403
    template.refresh_from_db()
    assert template.name == "Ops"


@pytest.mark.parametrize("path", ["/rules/", "/templates/"])
def test_lists_are_for_every_role_and_offer_new_only_to_operators(viewer_web, operator_web, path, rule):
    assert "New " not in viewer_web.get(path).content.decode().split("<main", 1)[1]
    assert "New " in operator_web.get(path).content.decode()


# --- The alarm options ------------------------------------------------------------------------------


def test_operator_creates_a_rule_with_the_alarm_options(operator_web, device):
    template = notification_template_create(name="Ops", message_template="{device_name}", recipients=[])
    options = {
        "duration_seconds": "120",
        "clear_threshold": "5",
        "clear_duration_seconds": "60",
        "auto_resolve": "on",
        "dedupe_while_open": "on",
        "reminder_minutes": "30",
        "reminder_limit": "3",
        "escalation": json.dumps({"after_minutes": 60, "template_id": template.id}),
        "action_config": json.dumps([{"type": "notification", "template_id": template.id}]),
    }

    response = operator_web.post("/rules/new/", rule_post(device, **options))

    assert response.status_code == 302
    rule = Rule.objects.get()
    assert (rule.duration_seconds, rule.clear_threshold, rule.clear_duration_seconds) == (120, Decimal("5"), 60)
    assert (rule.auto_resolve, rule.dedupe_while_open) == (True, True)
    assert (rule.reminder_minutes, rule.reminder_limit) == (30, 3)
    assert rule.escalation == {"after_minutes": 60, "template_id": template.id}


def test_blank_alarm_options_keep_the_defaults_and_an_edit_clears_them(operator_web, device):
    operator_web.post("/rules/new/", rule_post(device, duration_seconds="", clear_threshold="", escalation=""))
    rule = Rule.objects.get()
    assert (rule.duration_seconds, rule.clear_threshold, rule.escalation, rule.auto_resolve) == (0, None, None, False)

    operator_web.post(f"/rules/{rule.id}/", rule_post(device, clear_threshold="4", metric="temperature"))
    operator_web.post(f"/rules/{rule.id}/", rule_post(device, clear_threshold="", metric=""))
    rule.refresh_from_db()
    assert (rule.clear_threshold, rule.metric) == (None, None)


def test_a_nodata_rule_needs_no_threshold_and_its_backtest_counts_silences(operator_web, device, hour_of_readings):
    # The last 24 hours hold one hour of readings a minute apart: the 23 hours of silence before
    # them is one event, resolved by the first reading; no silence after reaches 10 minutes.
    draft = rule_post(device, operator="nodata", threshold="", duration_seconds="600", backtest_days="1")

    preview = operator_web.post("/rules/new/", {**draft, "preview": "1"}).content.decode()
    saved = operator_web.post("/rules/new/", draft)

    assert 'data-testid="backtest-events">1<' in preview
    assert 'data-testid="backtest-resolved">1<' in preview
    assert "no data" in preview
    assert saved.status_code == 302
    assert Rule.objects.get().operator == "nodata"


@pytest.mark.parametrize(
    ("options", "events", "resolved"),
    [
        # Each reading of 6 stands alone between readings of 5.5 and 4: it never lasts two minutes.
        ({"duration_seconds": "120"}, 0, 0),
        # Every 6 raises (no cooldown) and the 4 a minute later resolves it, but the last, at the
        # end of the range, is still open.
        ({"cooldown_minutes": "0", "auto_resolve": "on"}, 12, 11),
    ],
)
def test_the_backtest_preview_replays_the_drafts_alarm_options(
    operator_web, device, hour_of_readings, options, events, resolved
):
    draft = rule_post(device, threshold="5.5", backtest_days="1", preview="1", **options)

    page = operator_web.post("/rules/new/", draft).content.decode()

    assert f'data-testid="backtest-events">{events}<' in page
    assert f'data-testid="backtest-resolved">{resolved}<' in page
    assert 'data-testid="backtest-matching">12<' in page


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"clear_threshold": "6"}, "clear_threshold", "must not be above threshold"),
        ({"operator": "nodata", "threshold": "", "duration_seconds": "0"}, "duration_seconds", "a nodata rule needs"),
        ({"reminder_minutes": "10"}, "reminder_minutes", "no notification action"),
        ({"reminder_limit": "2"}, "reminder_limit", "needs reminder_minutes"),
        ({"escalation": '{"after_minutes": 5}'}, "escalation", "template_id: is required"),
        ({"escalation": "{"}, "escalation", "Value must be valid JSON."),
        ({"duration_seconds": "-5"}, "duration_seconds", "greater than or equal to 0"),
    ],
)
def test_bad_alarm_options_are_refused_naming_the_field(operator_web, device, changes, field, message):
    response = operator_web.post("/rules/new/", rule_post(device, **changes))

    assert response.status_code == 400
    assert errors_named(response) == {field}
    assert message in response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')
    assert not Rule.objects.exists()


def test_a_backtest_preview_names_the_options_it_does_not_replay(operator_web, device, hour_of_readings):
    template = notification_template_create(name="Ops", message_template="{device_name}", recipients=[])
    actions = json.dumps([{"type": "notification", "template_id": template.id}])
    draft = rule_post(device, action_config=actions, reminder_minutes="5", duration_seconds="60", preview="1")

    page = operator_web.post("/rules/new/", draft).content.decode()

    note = page.split('data-testid="backtest-not-replayed">')[1].split("</p>")[0]
    assert "<code>reminder_minutes</code>" in note
    assert "duration_seconds" not in note and "escalation" not in note


# --- State and history ------------------------------------------------------------------------------


def test_rule_page_shows_the_rules_state(viewer_web, rule, event):
    RuleState.objects.create(rule=rule, phase="firing", since=event.timestamp, open_event_id=event.id)

    page = viewer_web.get(f"/rules/{rule.id}/").content.decode()

    assert 'data-testid="rule-phase">firing<' in page
    assert f'href="/events/{event.id}/" data-testid="rule-open-event"' in page
    assert 'data-testid="rule-open-events">1<' in page


def test_a_rule_without_state_reads_ok(viewer_web, rule):
    assert 'data-testid="rule-phase">ok<' in viewer_web.get(f"/rules/{rule.id}/").content.decode()


def test_rule_list_shows_each_rules_state(viewer_web, rule, event):
    RuleState.objects.create(rule=rule, phase="pending", since=event.timestamp)

    row = viewer_web.get("/rules/").content.decode().split(f'data-rule-id="{rule.id}"')[1].split("</tr>")[0]

    assert 'data-testid="rule-phase">pending<' in row and "since" in row


def test_event_page_shows_occurrences_reminders_escalation_and_how_it_was_resolved(viewer_web, event):
    at = event.timestamp
    Event.objects.filter(id=event.id).update(
        occurrences=4,
        last_value=17.5,
        last_seen_at=at + timedelta(minutes=3),
        reminders_sent=2,
        escalated_at=at + timedelta(minutes=30),
        status="resolved",
        resolved_at=at + timedelta(minutes=40),
        resolved_by_system=True,
        resolved_value=4.5,
        resolved_telemetry_id=123,
    )

    page = viewer_web.get(f"/events/{event.id}/").content.decode()

    assert 'data-testid="occurrences">4 · last' in page and "value 17.5" in page
    assert 'data-testid="reminders">2 sent' in page
    assert 'data-testid="escalation">' in page
    resolved = page.split('data-testid="resolved">')[1].split("</dd>")[0]
    assert "by the hub (auto-resolve): back to 4.5 (telemetry 123)" in resolved


def test_a_rule_the_service_refuses_to_disable_says_why_and_stays_enabled(operator_web, device):
    template = notification_template_create(name="Ops", message_template="{device_name}", recipients=[])
    operator_web.post(
        "/rules/new/",
        rule_post(device, action_config=json.dumps([{"type": "notification", "template_id": template.id}])),
    )
    rule = Rule.objects.get()
    NotificationTemplate.objects.filter(id=template.id).update(is_active=False)

    response = operator_web.post(f"/rules/{rule.id}/disable/", follow=True)

    page = response.content.decode()
    assert "was not disabled: action_config:" in page and "template_id" in page
    rule.refresh_from_db()
    assert rule.is_enabled is True


@pytest.mark.django_db(transaction=True)
def test_a_template_name_saved_meanwhile_by_someone_else_is_refused_naming_the_field(operator_user):
    """Two operators save templates of the same name at the same moment: the form's check passes
    for both (neither sees the other's row), and the database's unique constraint refuses the second.
    The race is made deterministic: this test's transaction inserts the name and holds it while the
    form's save waits on the unique index; then it commits. The page names the field; no 500."""
    from django.db import connection, transaction

    from tests.locks import wait_until_a_transaction_waits_for_ours

    web = Client()
    web.force_login(operator_user)
    answer = {}

    def post():
        web.raise_request_exception = False  # a 500 is an answer to assert on
        try:
            answer["response"] = web.post("/templates/new/", template_post(name="Shift lead"))
        finally:
            connection.close()

    with transaction.atomic():
        notification_template_create(name="Shift lead", message_template="{rule_name}", recipients=[])
        thread = threading.Thread(target=post)
        thread.start()
        wait_until_a_transaction_waits_for_ours()
    thread.join(timeout=30)

    response = answer["response"]
    assert response.status_code == 400, response.content[:500]
    assert errors_named(response) == {"name"}
    assert "already exists" in response.content.decode()
    assert NotificationTemplate.objects.filter(name="Shift lead").count() == 1

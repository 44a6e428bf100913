"""The rule and template forms in a real browser: an operator drafts a rule, previews its backtest
and saves it; bad input is shown beside its field and saves nothing; a rule is disabled from the
list; a template's message is previewed and saved; a viewer sees the forms read-only and the
server refuses a forged post; the rule form fits a phone."""

import json
from decimal import Decimal

import pytest

from iothub.notifications.models import NotificationTemplate
from iothub.notifications.services import notification_template_create
from iothub.rules.models import Rule
from tests.browser.conftest import PHONE, log_in

# Committed for real, so that the live server's threads see the rows.
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FORGED_POST = """async ([url, fields]) => {
    const token = document.cookie.split('; ').find((c) => c.startsWith('csrftoken=')).split('=')[1];
    const body = new URLSearchParams(fields);
    const response = await fetch(url, {method: 'POST', headers: {'X-CSRFToken': token}, body});
    return response.status;
}"""


def test_operator_drafts_a_rule_previews_its_backtest_and_saves_it(
    page, live_server, operator_user, device, hour_of_readings
):
    log_in(page, live_server, "olga", "pw-olga", then="/rules/")
    page.click("[data-testid=rule-new]")
    page.select_option("#id_device", str(device.id))
    page.fill("#id_name", "Vibration above 5.5")
    page.select_option("#id_operator", "gt")
    page.fill("#id_threshold", "5.5")
    page.fill("#id_cooldown_minutes", "15")
    page.fill("#id_action_config", json.dumps([{"type": "stop_machine", "machine_id": "M-7"}]))
    page.check("#id_auto_resolve")
    page.select_option("select[name=backtest_days]", "1")

    page.click("button[data-action=preview]")

    # An hour cycling 4, 4.5, 5, 5.5, 6 a minute apart: twelve readings above 5.5, and with a
    # 15 minute cooldown four events, each resolved by the hub at the reading of 4 that follows.
    assert page.locator("[data-testid=backtest-events]").inner_text() == "4"
    assert page.locator("[data-testid=backtest-resolved]").inner_text() == "4"
    assert page.locator("[data-testid=backtest-matching]").inner_text() == "12"
    assert page.locator("[data-testid=backtest-event]").count() == 4
    assert not Rule.objects.exists()
    # The draft is kept in the form across the preview.
    assert page.input_value("#id_threshold") == "5.5"

    page.click("button[data-action=save]")

    page.wait_for_selector("text=saved.")
    rule = Rule.objects.get()
    assert page.url == f"{live_server.url}/rules/{rule.id}/"
    assert (rule.name, rule.threshold, rule.cooldown_minutes) == ("Vibration above 5.5", Decimal("5.5"), 15)
    assert rule.auto_resolve is True
    assert page.locator("[data-testid=rule-phase]").inner_text() == "ok"


def test_bad_input_is_shown_beside_its_field_and_nothing_is_saved(page, live_server, operator_user, device, rule):
    log_in(page, live_server, "olga", "pw-olga", then=f"/rules/{rule.id}/")
    page.fill("#id_name", "Renamed")
    page.fill("#id_metric", "9lives")
    page.fill("#id_action_config", '[{"type": "stop_machine"}]')

    page.click("button[data-action=save]")

    summary = page.locator("[data-testid=form-errors]")
    assert "Nothing was saved." in summary.inner_text()
    assert "is not a metric name" in page.locator("[data-field=metric] .error").inner_text()
    assert "[0].machine_id: is required" in page.locator("[data-field=action_config] .error").inner_text()
    assert page.locator("[data-error-for]").evaluate_all("(items) => items.map((i) => i.dataset.errorFor)") == [
        "metric",
        "action_config",
    ]
    assert page.get_attribute("#id_metric", "aria-invalid") == "true"
    rule.refresh_from_db()
    assert (rule.name, rule.metric) == ("High vibration", None)


def test_operator_disables_a_rule_from_the_list(page, live_server, operator_user, rule):
    log_in(page, live_server, "olga", "pw-olga", then="/rules/")
    row = page.locator(f"tr[data-rule-id='{rule.id}']")
    assert row.locator("[data-testid=rule-enabled]").inner_text() == "enabled"

    row.locator("button[data-action=disable]").click()

    page.wait_for_selector("text=disabled.")
    assert page.url == f"{live_server.url}/rules/"
    assert row.locator("[data-testid=rule-enabled]").inner_text() == "disabled"
    rule.refresh_from_db()
    assert rule.is_enabled is False


def test_operator_previews_a_templates_message_and_saves_it(page, live_server, operator_user, event):
    log_in(page, live_server, "olga", "pw-olga", then="/templates/")
    page.click("[data-testid=template-new]")
    page.fill("#id_name", "Shift lead SMS")
    page.fill("#id_message_template", "{severity}: {device_name} {metric}={value}")
    page.fill("#id_recipients", json.dumps([{"type": "sms", "phone": "+380501234567"}]))

    page.click("button[data-action=preview]")
    assert page.locator("[data-testid=rendered]").inner_text() == "critical: Press 3 vibration=30.2"

    page.fill("input[name=event]", str(event.id))
    page.click("button[data-action=preview]")
    assert page.locator("[data-testid=rendered]").inner_text() == "critical: Press 3 vibration=16.2"
    assert not NotificationTemplate.objects.exists()

    page.fill("#id_message_template", "{device.name} broke")
    page.click("button[data-action=save]")
    assert "attribute and index access" in page.locator("[data-field=message_template] .error").inner_text()
    assert not NotificationTemplate.objects.exists()

    page.fill("#id_message_template", "{device_name} broke")
    page.click("button[data-action=save]")
    page.wait_for_selector("text=saved.")
    template = NotificationTemplate.objects.get()
    assert template.recipients == [{"type": "sms", "phone": "+380501234567"}]
    assert page.locator("[data-testid=rendered]").inner_text() == "Press 3 broke"


def test_viewer_sees_the_forms_read_only_and_the_server_refuses_a_forged_post(page, live_server, viewer_user, rule):
    template = notification_template_create(name="Ops", message_template="{device_name}", recipients=[])
    log_in(page, live_server, "victor", "pw-victor", then=f"/rules/{rule.id}/")

    assert page.locator("#id_threshold").is_disabled()
    assert page.locator("button[data-action]").count() == 0
    assert "needs the operator role" in page.locator("[data-testid=viewer-note]").inner_text()
    fields = {"device": str(rule.device_id), "name": "Hijacked", "operator": "gt", "threshold": "1", "severity": "info"}
    fields["action_config"] = json.dumps(rule.action_config)
    assert page.evaluate(FORGED_POST, [f"/rules/{rule.id}/", fields]) == 403
    assert page.evaluate(FORGED_POST, [f"/rules/{rule.id}/disable/", {}]) == 403
    assert page.evaluate(FORGED_POST, ["/rules/new/", fields]) == 403

    page.goto(f"{live_server.url}/templates/{template.id}/")
    assert page.locator("#id_message_template").is_disabled()
    assert page.locator("[data-testid=rendered]").inner_text() == "Press 3"
    assert page.evaluate(FORGED_POST, [f"/templates/{template.id}/", {"name": "Hijacked"}]) == 403

    rule.refresh_from_db()
    template.refresh_from_db()
    assert (rule.name, rule.is_enabled, Rule.objects.count(), template.name) == ("High vibration", True, 1, "Ops")


def test_the_rule_form_fits_a_phone(page, live_server, operator_user, rule):
    page.set_viewport_size(PHONE)
    log_in(page, live_server, "olga", "pw-olga", then=f"/rules/{rule.id}/")

    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.locator("button[data-action=save]").is_visible()

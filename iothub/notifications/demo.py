"""The demo's alerting: a template that emails and calls a webhook, and a rule on the demo device
that uses it, so that one reading over 15 mm/s shows the whole path (event, email, signed webhook,
execution_results). Created through the services, idempotently, like the rest of the demo data.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from iothub.devices.models import Device
from iothub.notifications.models import NotificationTemplate
from iothub.notifications.services import notification_template_create
from iothub.rules.models import Rule
from iothub.rules.services import rule_create

DEMO_TEMPLATE_NAME = "Demo alarm"
DEMO_RULE_NAME = "High vibration"
DEMO_EMAIL = "ops@example.com"


@dataclass(frozen=True)
class DemoAlerts:
    template: NotificationTemplate
    rule: Rule
    template_created: bool
    rule_created: bool


@transaction.atomic
def demo_alerts_load(*, device: Device, webhook_url: str) -> DemoAlerts:
    """Where missing: the template (an email to ops@example.com and a webhook to `webhook_url`) and
    the rule `vibration > 15` on `device`, warning, one minute's cooldown, notifying through it."""
    template = NotificationTemplate.objects.filter(name=DEMO_TEMPLATE_NAME).first()
    template_created = template is None
    if template is None:
        template = notification_template_create(
            name=DEMO_TEMPLATE_NAME,
            message_template=(
                "{severity}: {rule_name} on {device_name} ({location}): {metric} {value} {unit} "
                "{operator} {threshold} at {timestamp}\n{event_url}"
            ),
            recipients=[
                {"type": "email", "address": DEMO_EMAIL, "name": "Operations"},
                {"type": "webhook", "url": webhook_url, "name": "Demo receiver"},
            ],
            retry_delay_minutes=1,
        )
    rule = Rule.objects.filter(device=device, name=DEMO_RULE_NAME).first()
    rule_created = rule is None
    if rule is None:
        rule = rule_create(
            device=device,
            name=DEMO_RULE_NAME,
            description="Demo: vibration above 15 mm/s notifies by email and webhook.",
            operator="gt",
            threshold=Decimal("15"),
            action_config=[{"type": "notification", "template_id": template.id}],
            cooldown_minutes=1,
        )
    return DemoAlerts(template, rule, template_created, rule_created)

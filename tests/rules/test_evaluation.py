"""Rules evaluated on every message, through the real ingest endpoint: operators, cooldown on the
readings' timestamps, buffered readings, disabled rules, the events' content, the query budget."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from iothub.devices.services import device_create
from iothub.events import services as event_services
from iothub.events.models import Event
from iothub.ingest.evaluation import readings_evaluate
from iothub.machines.models import MachineCommand
from iothub.notifications.models import NotificationTemplate
from iothub.rules import selectors
from iothub.rules.models import Rule
from iothub.telemetry.models import Telemetry
from iothub.telemetry.services import StoredReading
from tests.rules.helpers import make_rule, message, send

pytestmark = pytest.mark.django_db

# operator -> (a value that meets `x <op> 15`, one that does not), each at or next to the threshold.
OPERATOR_SIDES = {
    "gt": (15.1, 15),
    "gte": (15, 14.9),
    "lt": (14.9, 15),
    "lte": (15, 15.1),
    "eq": (15, 15.1),
    "neq": (15.1, 15),
}


@pytest.fixture
def token(device_with_token):
    return device_with_token.token


@pytest.fixture
def t0():
    """A base time an hour ago, so that readings after it are neither future nor too old."""
    return timezone.now().replace(microsecond=0) - timedelta(hours=1)


@pytest.mark.parametrize("operator", sorted(OPERATOR_SIDES))
def test_each_operator_raises_on_its_side_of_the_threshold_only(client, token, device, t0, operator):
    meets, misses = OPERATOR_SIDES[operator]
    make_rule(device, operator=operator, threshold="15", cooldown_minutes=0)

    assert send(client, token, message(device, at=t0, vibration=misses))["events"] == []
    raised = send(client, token, message(device, at=t0 + timedelta(seconds=1), vibration=meets))["events"]

    assert len(raised) == 1
    assert Event.objects.count() == 1


def test_cooldown_one_event_then_none_inside_the_window_then_one_after(client, token, device, t0):
    rule = make_rule(device, cooldown_minutes=15)

    first = send(client, token, message(device, at=t0, vibration=16))["events"]
    inside = send(client, token, message(device, at=t0 + timedelta(minutes=14, seconds=59), vibration=17))["events"]
    after = send(client, token, message(device, at=t0 + timedelta(minutes=15), vibration=18))["events"]

    assert (len(first), len(inside), len(after)) == (1, 0, 1)
    rule.refresh_from_db()
    assert rule.last_triggered_at == t0 + timedelta(minutes=15)


def test_a_buffered_reading_older_than_the_last_trigger_does_not_retrigger(client, token, device, t0):
    rule = make_rule(device, cooldown_minutes=15)
    send(client, token, message(device, at=t0 + timedelta(minutes=30), vibration=16))

    # The device uploads its backlog late: readings from before the live one that triggered.
    late = send(client, token, [message(device, at=t0 + timedelta(minutes=m), vibration=20) for m in (0, 5, 10)])

    assert late["events"] == []
    rule.refresh_from_db()
    assert rule.last_triggered_at == t0 + timedelta(minutes=30)


def test_a_batch_is_evaluated_in_timestamp_order_whatever_order_it_was_sent_in(client, token, device, t0):
    make_rule(device, cooldown_minutes=15)
    batch = [message(device, at=t0 + timedelta(minutes=m), vibration=16) for m in (20, 0, 5)]

    raised = send(client, token, batch)["events"]

    # In time order: 0 triggers, 5 is inside its cooldown, 20 is past it. Sent order would give one.
    assert [e["timestamp"] for e in raised] == [
        (t0 + timedelta(minutes=m)).isoformat().replace("+00:00", "Z") for m in (0, 20)
    ]


def test_a_zero_cooldown_raises_on_every_matching_reading(client, token, device, t0):
    make_rule(device, cooldown_minutes=0)
    batch = [message(device, at=t0 + timedelta(seconds=s), vibration=16) for s in range(3)]

    assert len(send(client, token, batch)["events"]) == 3


def test_a_null_cooldown_reads_as_the_default_fifteen_minutes(client, token, device, t0):
    rule = make_rule(device)
    Rule.objects.filter(pk=rule.pk).update(cooldown_minutes=None)

    times = [t0, t0 + timedelta(minutes=14), t0 + timedelta(minutes=15)]
    raised = send(client, token, [message(device, at=t, vibration=16) for t in times])["events"]

    assert len(raised) == 2


def test_a_disabled_rule_raises_nothing(client, token, device, t0):
    make_rule(device, is_enabled=False)

    assert send(client, token, message(device, at=t0, vibration=99))["events"] == []
    assert Event.objects.count() == 0


def test_a_rule_with_null_is_enabled_reads_as_disabled(client, token, device, t0):
    rule = make_rule(device)
    Rule.objects.filter(pk=rule.pk).update(is_enabled=None)

    assert send(client, token, message(device, at=t0, vibration=99))["events"] == []


def test_a_message_without_the_rules_metric_is_not_evaluated(client, token, device, t0):
    make_rule(device, metric="temperature", operator="lt", threshold="100")

    assert send(client, token, message(device, at=t0, vibration=16))["events"] == []
    raised = send(client, token, message(device, at=t0 + timedelta(seconds=1), temperature=45.3))["events"]
    assert len(raised) == 1
    # No unit: the type's unit belongs to its primary metric only.
    assert raised[0]["message"] == 'Temperature 45.3 < 100 on "Press 3" (Workshop A), rule "High vibration"'


def test_a_rule_edited_through_the_api_applies_to_the_next_message(client, token, device, t0, operator_client):
    rule = make_rule(device, threshold="50")
    assert send(client, token, message(device, at=t0, vibration=20))["events"] == []

    response = operator_client.patch(f"/api/v1/rules/{rule.id}/", {"threshold": "15"}, format="json")
    assert response.status_code == 200, response.content

    assert len(send(client, token, message(device, at=t0 + timedelta(seconds=1), vibration=20))["events"]) == 1


def test_an_event_holds_message_severity_metadata_and_pending_results(client, token, device, t0):
    template = NotificationTemplate.objects.create(name="alert", message_template="{message}", recipients=[])
    rule = make_rule(
        device,
        severity="critical",
        action_config=[
            {"type": "notification", "template_id": template.id, "recipients": ["admin@company.com"]},
            {"type": "stop_machine", "machine_id": "M-123"},
        ],
    )

    reply = send(client, token, message(device, at=t0, vibration=16.2, temperature=45.3))

    event = Event.objects.get()
    reading_id = reply["readings"][0]["id"]
    assert event.message == 'Vibration 16.2 mm_s > 15 on "Press 3" (Workshop A), rule "High vibration"'
    assert (event.severity, event.status, event.rule_id) == ("critical", "new", rule.id)
    assert (event.telemetry_id, event.timestamp) == (reading_id, t0)
    assert event.execution_results == [
        {"type": "notification", "template_id": template.id, "status": "pending"},
        {"type": "stop_machine", "machine_id": "M-123", "status": "pending"},
    ]
    metadata = event.metadata
    stored = Telemetry.objects.get(id=reading_id)
    assert metadata["reading"] == {
        "telemetry_id": reading_id,
        "timestamp": t0.isoformat(),
        "metric": "vibration",
        "value": 16.2,
        "unit": "mm_s",
        "payload": stored.payload,
    }
    assert stored.payload["metrics"] == {"vibration": 16.2, "temperature": 45.3}
    assert metadata["rule"] == {
        "id": str(rule.id),
        "name": "High vibration",
        "metric": "vibration",
        "operator": "gt",
        "threshold": "15.0000",
        "cooldown_minutes": 15,
        "severity": "critical",
    }
    assert metadata["device"]["serial_number"] == "VIB-SN-001"
    assert metadata["device"]["location"] == "Workshop A"
    assert metadata["device"]["device_type"]["metric_unit"] == "mm_s"

    assert reply["events"] == [
        {
            "id": event.id,
            "rule": str(rule.id),
            "rule_name": "High vibration",
            "severity": "critical",
            "status": "new",
            "timestamp": t0.isoformat().replace("+00:00", "Z"),
            "telemetry_id": reading_id,
            "message": event.message,
        }
    ]


def test_the_metadata_keeps_the_rule_as_it_was_when_edited_later(client, token, device, t0):
    rule = make_rule(device)
    send(client, token, message(device, at=t0, vibration=16.2))

    rule.threshold = Decimal("99")
    rule.name = "Renamed"
    rule.save()

    event = Event.objects.get()
    assert (event.metadata["rule"]["threshold"], event.metadata["rule"]["name"]) == ("15.0000", "High vibration")


def test_stop_machine_actions_are_queued_in_the_same_transaction(client, token, device, t0):
    make_rule(
        device,
        action_config=[
            {"type": "stop_machine", "machine_id": "M-1"},
            {"type": "stop_machine", "machine_id": "M-2"},
        ],
    )

    send(client, token, message(device, at=t0, vibration=16))

    event = Event.objects.get()
    commands = MachineCommand.objects.filter(event=event).order_by("action_index")
    assert [(c.action_index, c.machine_id, c.status, c.attempt_count) for c in commands] == [
        (0, "M-1", "pending", 0),
        (1, "M-2", "pending", 0),
    ]


def test_notification_actions_are_handed_to_the_notifications_enqueue(client, token, device, t0, monkeypatch):
    template = NotificationTemplate.objects.create(name="alert", message_template="{message}", recipients=[])
    action = {"type": "notification", "template_id": template.id, "recipients": ["ops@company.com"]}
    make_rule(device, action_config=[{"type": "stop_machine", "machine_id": "M-1"}, action])
    calls = []
    # The notifications app registers its enqueue with the events app when Django starts.
    monkeypatch.setitem(event_services._enqueuers, "notification", lambda **kwargs: calls.append(kwargs) or 1)

    send(client, token, message(device, at=t0, vibration=16))

    assert calls == [{"event": Event.objects.get(), "action_index": 1, "action": action}]


def test_an_action_written_past_validation_fails_in_its_entry_without_failing_ingest(client, token, device, t0):
    rule = make_rule(device)
    Rule.objects.filter(pk=rule.pk).update(
        action_config=[{"type": "stop_machine"}, {"type": "stop_machine", "machine_id": "M-9"}]
    )

    send(client, token, message(device, at=t0, vibration=16))

    event = Event.objects.get()
    assert event.execution_results == [
        {
            "type": "stop_machine",
            "status": "failed",
            "error": "invalid action: machine_id: is required for a stop_machine action",
        },
        {"type": "stop_machine", "machine_id": "M-9", "status": "pending"},
    ]
    assert list(MachineCommand.objects.values_list("action_index", flat=True)) == [1]


def test_rules_of_other_devices_are_not_evaluated(client, token, device, t0, vibration_type):
    other = device_create(device_type=vibration_type, name="Press 4", serial_number="VIB-SN-002").device
    make_rule(other)

    assert send(client, token, message(device, at=t0, vibration=99))["events"] == []


def test_three_rules_that_do_not_trigger_cost_one_query(device, t0, monkeypatch):
    for name in ("a", "b", "c"):
        make_rule(device, name=name, threshold="50")
    reading = StoredReading(id=1, timestamp=t0, payload={"metrics": {"vibration": 16}})
    prepared = []
    real = selectors.execute_prepared
    monkeypatch.setattr(selectors, "execute_prepared", lambda sql, params: prepared.append(sql) or real(sql, params))

    with CaptureQueriesContext(connection) as orm_queries:
        assert readings_evaluate(device=device, readings=[reading] * 10) == []

    assert len(orm_queries) == 0
    assert len(prepared) == 1 and "FROM rules WHERE device_id" in prepared[0]


def test_the_enabled_rules_read_is_the_rules_as_stored(device):
    on = make_rule(device, name="on", metric="temperature", severity="critical", cooldown_minutes=3)
    make_rule(device, name="off", is_enabled=False)

    (read,) = selectors.rules_enabled_for_device(device_id=device.id)

    stored = Rule.objects.get(pk=on.pk)
    assert [getattr(read, f.attname) for f in Rule._meta.concrete_fields] == [
        getattr(stored, f.attname) for f in Rule._meta.concrete_fields
    ]


def test_the_enabled_rules_query_can_use_the_specs_index(device):
    make_rule(device)
    sql, params = selectors._ENABLED_FOR_DEVICE_SQL, [device.id]
    with connection.cursor() as cursor:
        # A tiny test table would be read sequentially; forbid that to see what the index offers.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "idx_rule_device_enabled" in plan, plan


def test_a_batch_over_the_threshold_claims_the_cooldown_once(client, token, device, t0, monkeypatch):
    """Readings inside the cooldown a reading of the same batch just claimed cannot claim: one
    claim round trip for the batch, not one per reading."""
    evaluation = event_services  # where the claim is made, for ingest and the worker alike

    make_rule(device, cooldown_minutes=15)
    claims = []
    real_claim = evaluation.rule_trigger_claim
    monkeypatch.setattr(evaluation, "rule_trigger_claim", lambda **kw: claims.append(kw) or real_claim(**kw))

    batch = [message(device, at=t0 + timedelta(seconds=i), vibration=20) for i in range(50)]
    assert len(send(client, token, batch)["events"]) == 1
    assert len(claims) == 1


def test_a_rule_cooling_down_as_read_with_the_device_is_not_claimed_again(client, token, device, t0, monkeypatch):
    evaluation = event_services  # where the claim is made, for ingest and the worker alike

    make_rule(device, cooldown_minutes=15)
    assert len(send(client, token, message(device, at=t0, vibration=20))["events"]) == 1
    claims = []
    monkeypatch.setattr(evaluation, "rule_trigger_claim", lambda **kw: claims.append(kw) or True)

    later = message(device, at=t0 + timedelta(minutes=5), vibration=20)
    assert send(client, token, later)["events"] == []
    assert claims == []  # the device's read already said "cooling down"
    assert Event.objects.count() == 1

"""`POST /api/v1/rules/{id}/backtest/`: what a rule, or a draft of it, would have raised on the
stored readings, honouring the cooldown exactly as the live evaluation does."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from iothub.devices.services import device_create
from iothub.events.models import Event
from iothub.rules.models import Rule
from tests.rules.helpers import make_rule, message, send

pytestmark = pytest.mark.django_db

# One reading a minute for an hour: 20 in minutes 0-9 and 30-39 (over 15), 10 elsewhere.
VALUES = [20 if (m % 30) < 10 else 10 for m in range(60)]


@pytest.fixture
def t0():
    return timezone.now().replace(microsecond=0) - timedelta(hours=2)


@pytest.fixture
def hour_of_readings(client, device_with_token, t0):
    device = device_with_token.device
    batch = [message(device, at=t0 + timedelta(minutes=m), vibration=v) for m, v in enumerate(VALUES)]
    return send(client, device_with_token.token, batch)["readings"]


def url(rule) -> str:
    return f"/api/v1/rules/{rule.id}/backtest/"


def iso(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_counts_events_honouring_the_cooldown(operator_client, device, hour_of_readings, t0):
    rule = make_rule(device, is_enabled=False, cooldown_minutes=15)

    response = operator_client.post(url(rule), {"start": iso(t0), "end": iso(t0 + timedelta(hours=1))}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    # Matches at minutes 0-9 and 30-39; with 15 minutes of cooldown: 0 and 30.
    assert (body["events"], body["matching_readings"], body["truncated"]) == (2, 20, False)
    assert [e["timestamp"] for e in body["first_events"]] == [iso(t0), iso(t0 + timedelta(minutes=30))]
    assert [e["telemetry_id"] for e in body["first_events"]] == [hour_of_readings[0]["id"], hour_of_readings[30]["id"]]
    assert [e["value"] for e in body["first_events"]] == ["20", "20"]
    assert body["condition"] == {
        "metric": "vibration",
        "operator": "gt",
        "threshold": "15.0000",
        "cooldown_minutes": 15,
    }


def test_agrees_with_what_the_live_evaluation_raised(client, operator_client, device_with_token, t0):
    device = device_with_token.device
    rule = make_rule(device, cooldown_minutes=7)
    values = [(m, 16 + (m % 4)) for m in range(0, 90, 2) if m % 12 != 0]
    send(
        client, device_with_token.token, [message(device, at=t0 + timedelta(minutes=m), vibration=v) for m, v in values]
    )
    live = list(Event.objects.order_by("timestamp").values_list("telemetry_id", flat=True))

    body = operator_client.post(
        url(rule), {"start": iso(t0), "end": iso(t0 + timedelta(hours=2)), "first": 100}, format="json"
    ).json()

    assert body["events"] == len(live) > 1
    assert [e["telemetry_id"] for e in body["first_events"]] == live


def test_a_draft_changes_the_condition_without_saving_it(operator_client, device, hour_of_readings, t0):
    rule = make_rule(device, cooldown_minutes=15)
    draft = {"threshold": "5", "cooldown_minutes": 0, "operator": "gte"}

    body = operator_client.post(
        url(rule), {"start": iso(t0), "end": iso(t0 + timedelta(hours=1)), **draft}, format="json"
    ).json()

    assert (body["events"], body["matching_readings"]) == (60, 60)
    assert body["condition"] == {"metric": "vibration", "operator": "gte", "threshold": "5.0000", "cooldown_minutes": 0}
    rule.refresh_from_db()
    assert (str(rule.threshold), rule.cooldown_minutes, rule.last_triggered_at) == ("15.0000", 15, None)
    assert Event.objects.count() == 0


def test_the_range_is_start_inclusive_end_exclusive(operator_client, device, hour_of_readings, t0):
    rule = make_rule(device, cooldown_minutes=0)

    body = operator_client.post(
        url(rule), {"start": iso(t0 + timedelta(minutes=5)), "end": iso(t0 + timedelta(minutes=30))}, format="json"
    ).json()

    # Minutes 5..9 match; minute 30 is the (excluded) end.
    assert body["events"] == 5


def test_only_the_rules_device_and_metric_count(operator_client, device, vibration_type, t0):
    other = device_create(device_type=vibration_type, name="Press 4", serial_number="VIB-SN-002").device
    with connection.cursor() as cursor:
        for dev, metrics in [
            (other, '{"vibration": 99}'),
            (device, '{"temperature": 99}'),
            (device, '{"vibration": "high"}'),
            (device, '{"vibration": 99}'),
        ]:
            cursor.execute(
                'INSERT INTO telemetry (device_id, "timestamp", payload) '
                "VALUES (%s, %s, jsonb_build_object('metrics', %s::jsonb))",
                [dev.id, t0, metrics],
            )
    rule = make_rule(device, cooldown_minutes=0)

    body = operator_client.post(
        url(rule), {"start": iso(t0), "end": iso(t0 + timedelta(minutes=1))}, format="json"
    ).json()

    assert (body["events"], body["matching_readings"]) == (1, 1)


def test_the_scan_is_capped_and_says_so(operator_client, device, hour_of_readings, t0, monkeypatch):
    monkeypatch.setattr("iothub.rules.backtest.MAX_MATCHES", 5)
    rule = make_rule(device, cooldown_minutes=0)

    body = operator_client.post(
        url(rule), {"start": iso(t0), "end": iso(t0 + timedelta(hours=1))}, format="json"
    ).json()

    assert (body["truncated"], body["matching_readings"], body["events"]) == (True, 5, 5)
    assert body["scanned_until"] == iso(t0 + timedelta(minutes=4))


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end", "must be after start"),
        ({"start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"}, "start", "longer than 31 days"),
        ({"start": "yesterday"}, "start", "wrong format"),
        ({"operator": "between"}, "operator", "not a valid choice"),
        ({"threshold": "1.00001"}, "threshold", "4 decimal places"),
        ({"cooldown_minutes": -5}, "cooldown_minutes", "greater than or equal to 0"),
        ({"metric": "bad name"}, "metric", "is not a metric name"),
        ({"first": 1000}, "first", "less than or equal to 100"),
        # The default start, 7 days before `end`, would be before year 1.
        ({"end": "0001-01-02T00:00:00Z"}, "end", "too early"),
    ],
)
def test_invalid_parameters_are_a_400_naming_the_field(operator_client, device, body, field, fragment):
    rule = make_rule(device)

    response = operator_client.post(url(rule), body, format="json")

    assert response.status_code == 400
    assert any(fragment in m for m in response.json()[field]), response.json()


def test_the_default_range_is_the_last_seven_days(operator_client, device, hour_of_readings):
    rule = make_rule(device)

    body = operator_client.post(url(rule), {}, format="json").json()

    assert body["events"] == 2
    end = timezone.datetime.fromisoformat(body["end"])
    assert end - timezone.datetime.fromisoformat(body["start"]) == timedelta(days=7)


def test_a_viewer_cannot_backtest(viewer_client, device):
    rule = make_rule(device)

    assert viewer_client.post(url(rule), {}, format="json").status_code == 403


def test_a_null_cooldown_replays_as_fifteen_minutes(operator_client, device, hour_of_readings, t0):
    rule = make_rule(device)
    Rule.objects.filter(pk=rule.pk).update(cooldown_minutes=None)

    body = operator_client.post(
        url(rule), {"start": iso(t0), "end": iso(t0 + timedelta(hours=1))}, format="json"
    ).json()

    assert (body["condition"]["cooldown_minutes"], body["events"]) == (15, 2)


def test_a_stateful_draft_is_replayed_by_the_live_state_machine(operator_client, device, hour_of_readings, t0):
    """Over 20 for minutes 0-9 and 30-39: with a 5-minute duration and auto-resolve, each stretch
    raises at its fifth minute and resolves at its first reading back under."""
    rule = make_rule(device, cooldown_minutes=0)

    response = operator_client.post(
        url(rule),
        {
            "start": iso(t0),
            "end": iso(t0 + timedelta(hours=1)),
            "duration_seconds": 300,
            "auto_resolve": True,
            "dedupe_while_open": True,
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["events"], body["resolved"], body["updates"], body["matching_readings"]) == (2, 2, 8, 20)
    assert [(e["timestamp"], e["resolved_at"], e["occurrences"]) for e in body["first_events"]] == [
        (iso(t0 + timedelta(minutes=5)), iso(t0 + timedelta(minutes=10)), 5),
        (iso(t0 + timedelta(minutes=35)), iso(t0 + timedelta(minutes=40)), 5),
    ]
    assert body["condition"]["duration_seconds"] == 300


def test_the_backtest_agrees_with_live_stateful_evaluation(client, operator_client, device_with_token, t0):
    device = device_with_token.device
    rule = make_rule(
        device,
        cooldown_minutes=0,
        duration_seconds=120,
        clear_threshold="12",
        auto_resolve=True,
        dedupe_while_open=True,
    )
    values = [16, 16, 16, 13, 16, 11, 11, 16, 16, 16, 16, 9]
    for m, v in enumerate(values):
        send(client, device_with_token.token, message(device, at=t0 + timedelta(minutes=m), vibration=v))

    body = operator_client.post(
        url(rule), {"start": iso(t0), "end": iso(t0 + timedelta(hours=1))}, format="json"
    ).json()

    live = list(Event.objects.order_by("timestamp"))
    assert body["events"] == len(live) == 2
    assert body["resolved"] == sum(e.status == "resolved" for e in live) == 2
    assert [e["timestamp"] for e in body["first_events"]] == [iso(e.timestamp) for e in live]
    assert [e["resolved_telemetry_id"] for e in body["first_events"]] == [e.resolved_telemetry_id for e in live]
    assert [e["occurrences"] for e in body["first_events"]] == [e.occurrences for e in live] == [2, 2]


def test_a_nodata_rule_backtests_its_silences(operator_client, device_with_token, client, t0):
    device = device_with_token.device
    rule = make_rule(device, operator="nodata", threshold="0", duration_seconds=600, cooldown_minutes=0)
    for m in (0, 5, 30, 35):  # silent from 5 to 30: one event at 15, resolved at 30
        send(client, device_with_token.token, message(device, at=t0 + timedelta(minutes=m), vibration=1))

    body = operator_client.post(
        url(rule), {"start": iso(t0), "end": iso(t0 + timedelta(minutes=40))}, format="json"
    ).json()

    assert (body["events"], body["resolved"]) == (1, 1)
    assert body["first_events"][0]["timestamp"] == iso(t0 + timedelta(minutes=15))
    assert body["first_events"][0]["resolved_at"] == iso(t0 + timedelta(minutes=30))
    assert body["first_events"][0]["value"] is None


def test_a_draft_with_a_bad_option_is_a_400_naming_it(operator_client, device, t0):
    rule = make_rule(device)

    response = operator_client.post(url(rule), {"clear_threshold": "99"}, format="json")

    assert response.status_code == 400
    assert "clear_threshold" in response.json()

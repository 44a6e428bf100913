"""The alarm options through the real ingest endpoint, with readings at chosen timestamps: the
exact events raised, updated and resolved, and each rule's state in the rules API."""

from datetime import timedelta

import pytest
from django.utils import timezone

from iothub.events.models import Event, EventStatus
from iothub.rules.models import RuleState
from iothub.telemetry.models import Telemetry
from tests.rules.helpers import make_rule, message, send

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(device_with_token):
    return device_with_token.token


@pytest.fixture
def t0():
    return timezone.now().replace(microsecond=0) - timedelta(hours=1)


def at(t0, seconds):
    return t0 + timedelta(seconds=seconds)


def readings(client, token, device, t0, *pairs):
    """Send (seconds, value) readings one request each; the events each reply raised, by id."""
    return [
        [e["id"] for e in send(client, token, message(device, at=at(t0, s), vibration=v))["events"]] for s, v in pairs
    ]


def state_of(operator_client, rule):
    response = operator_client.get(f"/api/v1/rules/{rule.id}/")
    assert response.status_code == 200
    return response.json()["state"]


def test_duration_raises_only_when_every_reading_held_long_enough(client, token, device, t0, operator_client):
    rule = make_rule(device, duration_seconds=60)

    raised = readings(client, token, device, t0, (0, 16), (30, 17), (50, 14), (60, 16), (100, 16), (120, 18))

    # 14 at t=50 broke the condition: the duration counts again from t=60, so the event is at t=120.
    assert raised == [[], [], [], [], [], [Event.objects.get().id]]
    event = Event.objects.get()
    assert (event.timestamp, event.last_value) == (at(t0, 120), 18)
    assert state_of(operator_client, rule)["phase"] == "firing"
    assert state_of(operator_client, rule)["open_event"] == event.id


def test_a_pending_rule_shows_since_when_in_the_api(client, token, device, t0, operator_client):
    rule = make_rule(device, duration_seconds=600)

    readings(client, token, device, t0, (0, 14), (10, 16), (20, 17))

    state = state_of(operator_client, rule)
    assert (state["phase"], state["since"]) == ("pending", at(t0, 10).isoformat().replace("+00:00", "Z"))
    assert Event.objects.count() == 0


def test_a_buffered_batch_is_judged_by_its_timestamps(client, token, device, t0):
    make_rule(device, duration_seconds=60)

    reply = send(client, token, [message(device, at=at(t0, s), vibration=20) for s in (90, 0, 30, 60)])

    assert [e["timestamp"] for e in reply["events"]] == [at(t0, 60).isoformat().replace("+00:00", "Z")]


def test_auto_resolve_with_hysteresis_resolves_by_system_with_the_clearing_reading(client, token, device, t0):
    make_rule(device, clear_threshold="12", clear_duration_seconds=30, auto_resolve=True)

    readings(client, token, device, t0, (0, 16), (10, 13), (20, 11), (40, 11.5), (50, 10))

    event = Event.objects.get()
    assert event.status == EventStatus.RESOLVED
    assert event.resolved_by_system and event.resolved_by is None
    assert event.resolved_value == 10
    # The reading at t=50 cleared it: on the safe side (below 12) since t=20, for 30 s.
    assert event.resolved_telemetry_id == Telemetry.objects.get(timestamp=at(t0, 50)).id
    assert event.resolution_note.startswith("resolved by the hub: cleared")


def test_the_resolved_event_in_the_api_says_how(client, token, device, t0, viewer_client):
    make_rule(device, auto_resolve=True)
    readings(client, token, device, t0, (0, 16), (10, 9))

    body = viewer_client.get(f"/api/v1/events/{Event.objects.get().id}/").json()

    assert (body["status"], body["resolved_by"], body["resolved_by_system"], body["resolved_value"]) == (
        "resolved",
        None,
        True,
        9,
    )


def test_oscillating_inside_the_band_raises_no_new_event_and_resolves_nothing(client, token, device, t0):
    make_rule(device, clear_threshold="12", auto_resolve=True, cooldown_minutes=0)

    raised = readings(client, token, device, t0, (0, 16), (10, 13), (20, 14), (30, 12.5), (40, 14.9), (50, 13))

    assert sum(map(len, raised)) == 1
    assert Event.objects.get().status == EventStatus.NEW


def test_dedupe_updates_the_open_event_then_opens_a_new_one_after_it_resolved(
    client, token, device, t0, operator_client
):
    make_rule(device, dedupe_while_open=True, cooldown_minutes=0)

    first = readings(client, token, device, t0, (0, 16), (10, 17), (20, 18.5))
    event = Event.objects.get()
    assert operator_client.post(f"/api/v1/events/{event.id}/acknowledge/").status_code == 200
    while_acknowledged = readings(client, token, device, t0, (30, 19))
    assert operator_client.post(f"/api/v1/events/{event.id}/resolve/").status_code == 200
    after = readings(client, token, device, t0, (40, 20))

    assert first == [[event.id], [], []]
    assert while_acknowledged == [[]]
    event.refresh_from_db()
    assert (event.occurrences, event.last_value, event.last_seen_at) == (4, 19, at(t0, 30))
    assert len(after[0]) == 1 and after[0][0] != event.id
    assert Event.objects.count() == 2


def test_dedupe_with_a_cooldown_waits_for_it_after_the_resolve(client, token, device, t0, operator_client):
    make_rule(device, dedupe_while_open=True, cooldown_minutes=15)
    readings(client, token, device, t0, (0, 16))
    operator_client.post(f"/api/v1/events/{Event.objects.get().id}/resolve/")

    inside = readings(client, token, device, t0, (600, 16))
    after = readings(client, token, device, t0, (900, 16))

    assert (inside, len(after[0])) == ([[]], 1)


def test_a_rule_without_options_keeps_no_state_and_raises_as_before(client, token, device, t0):
    make_rule(device, cooldown_minutes=0)

    raised = readings(client, token, device, t0, (0, 16), (10, 17), (20, 10), (30, 16))

    assert [len(r) for r in raised] == [1, 1, 0, 1]
    assert not RuleState.objects.exists()
    assert all(e.status == EventStatus.NEW and e.occurrences == 1 for e in Event.objects.all())


def test_editing_the_condition_starts_the_state_over(client, token, device, t0, operator_client):
    rule = make_rule(device, duration_seconds=60)
    readings(client, token, device, t0, (0, 16), (30, 16))

    operator_client.patch(f"/api/v1/rules/{rule.id}/", {"threshold": "15.5"}, format="json")

    assert state_of(operator_client, rule)["phase"] == "ok"
    assert readings(client, token, device, t0, (60, 16)) == [[]]  # pending again from t=60

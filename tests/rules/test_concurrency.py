"""Concurrent messages over the threshold raise one event: real threads, each with its own
database connection and transaction, committing for real (`transaction=True`)."""

import json
import time

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from iothub.events.models import Event
from iothub.rules.models import Rule
from iothub.rules.services import rule_trigger_claim
from tests.rules.helpers import INGEST_URL, make_rule, message, run_at_once

CONCURRENCY = 20


def post_at_once(device, token: str, **metrics) -> list:
    """The same message posted by CONCURRENCY clients at once, each on its own connection."""
    body = json.dumps(message(device, **metrics))

    def post(_):
        return Client().post(
            INGEST_URL, data=body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
        )

    return run_at_once(post, CONCURRENCY)


@pytest.mark.django_db(transaction=True)
def test_cooldown_raises_one_event_for_twenty_concurrent_messages(device_with_token):
    device, token = device_with_token.device, device_with_token.token
    make_rule(device, cooldown_minutes=15)

    responses = post_at_once(device, token, vibration=16.2)

    assert [r.status_code for r in responses] == [201] * CONCURRENCY
    raised = [e for r in responses for e in r.json()["events"]]
    assert len(raised) == 1
    assert list(Event.objects.values_list("id", flat=True)) == [raised[0]["id"]]


@pytest.mark.django_db(transaction=True)
def test_the_claim_itself_is_atomic_across_transactions(device):
    """Without ingest's device lock in front: twenty transactions claim the same rule for the same
    instant, each holding its transaction open a moment after claiming; one wins."""
    rule = make_rule(device, cooldown_minutes=15)
    at = timezone.now()

    def claim(_):
        with transaction.atomic():
            won = rule_trigger_claim(rule_id=rule.id, at=at)
            time.sleep(0.05)  # keep the row lock while the others queue on it
            return won

    results = run_at_once(claim, CONCURRENCY)

    assert results.count(True) == 1
    assert Rule.objects.get(pk=rule.pk).last_triggered_at == at


@pytest.mark.django_db(transaction=True)
def test_one_open_event_for_twenty_concurrent_breaches_each_counted(device_with_token):
    """`dedupe_while_open` with no cooldown: the rule's state row makes concurrent requests take
    turns, so the first raises the event and the other nineteen fold into it."""
    device, token = device_with_token.device, device_with_token.token
    make_rule(device, cooldown_minutes=0, dedupe_while_open=True, duration_seconds=0)

    responses = post_at_once(device, token, vibration=16.2)

    assert [r.status_code for r in responses] == [201] * CONCURRENCY
    raised = [e for r in responses for e in r.json()["events"]]
    assert len(raised) == 1
    event = Event.objects.get()
    assert (event.id, event.occurrences) == (raised[0]["id"], CONCURRENCY)

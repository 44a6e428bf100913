"""Nodata rules: the worker raises an event when a device has sent no reading of the metric for
the rule's `duration_seconds`, and the next reading through the ingest endpoint resolves it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from iothub.events.models import Event, EventStatus
from iothub.events.services import nodata_rules_evaluate
from iothub.machines.models import MachineCommand
from iothub.worker.jobs import PeriodicJob, periodic_jobs
from tests.rules.helpers import make_rule, message, send
from tests.worker.drive import running_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def nodata_rule(device, **fields):
    return make_rule(
        device, name="Silent press", operator="nodata", threshold="0", duration_seconds=60, cooldown_minutes=0, **fields
    )


def test_the_worker_raises_after_the_silence_and_the_next_reading_resolves(client, device_with_token, viewer_client):
    device, token = device_with_token.device, device_with_token.token
    rule = nodata_rule(device)
    last = timezone.now().replace(microsecond=0) - timedelta(seconds=90)
    send(client, token, message(device, at=last, vibration=3))

    job = PeriodicJob("rules_nodata", every=timedelta(seconds=0.1), task=nodata_rules_evaluate)
    with running_worker([], periodic=[job]):
        wait_until(lambda: Event.objects.exists(), what="the nodata event")
    event = Event.objects.get()
    state = viewer_client.get(f"/api/v1/rules/{rule.id}/").json()["state"]

    assert event.telemetry_id is None and event.status == EventStatus.NEW
    assert event.message.startswith('No vibration reading from "Press 3" (Workshop A) since ')
    assert (state["phase"], state["open_event"]) == ("firing", event.id)
    assert MachineCommand.objects.filter(event=event).count() == 1  # its actions queued as any event's

    reply = send(client, token, message(device, vibration=4))

    event.refresh_from_db()
    assert reply["events"] == []
    assert event.status == EventStatus.RESOLVED and event.resolved_by_system
    assert event.resolved_telemetry_id == reply["readings"][0]["id"]
    assert viewer_client.get(f"/api/v1/rules/{rule.id}/").json()["state"]["phase"] == "ok"


def test_a_silence_shorter_than_the_duration_raises_nothing(client, device_with_token):
    device, token = device_with_token.device, device_with_token.token
    nodata_rule(device)
    send(client, token, message(device, at=timezone.now() - timedelta(seconds=30), vibration=3))

    assert nodata_rules_evaluate() == 0
    assert nodata_rules_evaluate(now=timezone.now() + timedelta(seconds=31)) == 1
    assert nodata_rules_evaluate(now=timezone.now() + timedelta(seconds=120)) == 0  # firing: once per silence
    assert Event.objects.count() == 1


def test_a_device_that_never_reported_counts_from_the_rules_creation(device):
    nodata_rule(device)

    assert nodata_rules_evaluate() == 0
    assert nodata_rules_evaluate(now=timezone.now() + timedelta(seconds=61)) == 1


def test_readings_of_another_metric_do_not_count(client, device_with_token):
    device, token = device_with_token.device, device_with_token.token
    nodata_rule(device, metric="temperature")
    send(client, token, message(device, vibration=3))

    assert nodata_rules_evaluate(now=timezone.now() + timedelta(seconds=61)) == 1


def test_the_worker_runs_the_nodata_and_follow_up_tasks(settings):
    jobs = {job.name: job for job in periodic_jobs()}

    assert jobs["rules_nodata"].every == timedelta(seconds=settings.IOTHUB_WORKER_ALARM_CHECK_SECONDS)
    assert jobs["event_follow_ups"].every == timedelta(seconds=settings.IOTHUB_WORKER_ALARM_CHECK_SECONDS)

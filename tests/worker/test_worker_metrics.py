"""What the worker tells /metrics and the log: a machine call's outcome with its ids, and the
time of the worker's last round (its liveness)."""

import json
import time

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from iothub.machines.services import machine_command_run_next
from iothub.monitoring.logformat import HubJsonFormatter
from iothub.worker.loop import Worker
from tests.worker.test_stop_machine import event  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


def sample(name: str, **labels) -> float:
    text = Client().get("/metrics").content.decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def test_a_completed_machine_call_is_counted_and_logged_with_its_ids(event, machine_api, caplog):  # noqa: F811
    before = sample("iothub_machine_commands_total", outcome="completed")

    with caplog.at_level("INFO", logger="iothub.machines.services"):
        assert machine_command_run_next() == 1

    assert sample("iothub_machine_commands_total", outcome="completed") == before + 1
    (record,) = [r for r in caplog.records if getattr(r, "outcome", None) == "completed"]
    line = json.loads(HubJsonFormatter().format(record))
    assert (line["event_id"], line["machine_id"], line["attempt"]) == (event.id, "M-123", 1)
    assert isinstance(line["machine_command_id"], int)


def test_a_failed_machine_call_is_counted_as_failed(event, machine_api):  # noqa: F811
    machine_api.status = 400  # a client error is final at once
    before = sample("iothub_machine_commands_total", outcome="failed")

    machine_command_run_next()

    assert sample("iothub_machine_commands_total", outcome="failed") == before + 1


def test_each_round_of_the_worker_marks_it_alive():
    started = time.time()

    Worker(jobs=[]).run_round()

    assert sample("iothub_worker_last_round_timestamp_seconds") >= started

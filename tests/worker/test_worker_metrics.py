"""What the worker tells /metrics, the log and its liveness check: a machine call's outcome with
its ids, and the heartbeat of a running worker."""

import json
import time

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from iothub.liveness import heartbeat_age, main
from iothub.machines.outbox import MachineCommandOutbox
from iothub.monitoring.logformat import HubJsonFormatter
from tests.worker.drive import running_worker, wait_until
from tests.worker.test_stop_machine import event, run_next  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)


def sample(name: str, **labels) -> float:
    text = Client().get("/metrics").content.decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def test_a_completed_machine_call_is_counted_and_logged_with_its_ids(event, machine_api, caplog):  # noqa: F811
    before = sample("iothub_machine_commands_total", outcome="completed")

    with caplog.at_level("INFO", logger="iothub.machines.outbox"):
        assert run_next() == 1

    assert sample("iothub_machine_commands_total", outcome="completed") == before + 1
    (record,) = [r for r in caplog.records if getattr(r, "outcome", None) == "completed"]
    line = json.loads(HubJsonFormatter().format(record))
    assert (line["event_id"], line["machine_id"], line["attempt"]) == (event.id, "M-123", 1)
    assert isinstance(line["machine_command_id"], int)


def test_a_failed_machine_call_is_counted_as_failed(event, machine_api):  # noqa: F811
    machine_api.status = 400  # a client error is final at once
    before = sample("iothub_machine_commands_total", outcome="failed")

    run_next()

    assert sample("iothub_machine_commands_total", outcome="failed") == before + 1


def test_a_running_worker_beats_its_heartbeat_and_the_liveness_check_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("IOTHUB_HEARTBEAT_DIR", str(tmp_path))
    assert main(["worker"]) == 1  # never beaten yet
    assert "no heartbeat" in capsys.readouterr().out
    started = time.time()

    with running_worker([MachineCommandOutbox()]):
        wait_until(lambda: heartbeat_age("worker") is not None, what="the heartbeat")
        assert sample("iothub_worker_last_round_timestamp_seconds") >= started

    assert main(["worker", "--max-age", "60"]) == 0
    assert "worker: alive" in capsys.readouterr().out
    assert main(["worker", "--max-age", "-1"]) == 1  # older than asked for: not alive
    assert "more than" in capsys.readouterr().out

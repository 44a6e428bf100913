"""The `stop_machine` action against a real HTTP server on loopback: the call, success, error
statuses, a server slower than the timeout, retries with backoff, and the final entry in the
event's `execution_results`."""

from datetime import timedelta

import pytest
from django.utils import timezone

from iothub.events.models import Event
from iothub.machines.models import MachineCommand
from iothub.machines.outbox import MachineCommandOutbox
from tests.rules.helpers import make_rule, message, send
from tests.worker.drive import next_due, send_due

# The engine reads and writes on connections of its own: the tests commit.
pytestmark = pytest.mark.django_db(transaction=True)


def run_next() -> int:
    """One batch of one command, as the worker's engine runs it."""
    return send_due(MachineCommandOutbox(), size=1, batches=1)


@pytest.fixture
def event(client, device_with_token, machine_settings):
    """An event raised through ingest by a rule whose action stops machine M-123."""
    device = device_with_token.device
    make_rule(device, action_config=[{"type": "stop_machine", "machine_id": "M-123"}])
    send(client, device_with_token.token, message(device, vibration=16.2))
    return Event.objects.get()


def make_due() -> None:
    MachineCommand.objects.filter(status="pending").update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def entry(event) -> dict:
    event.refresh_from_db()
    return event.execution_results[0]


def test_success_calls_the_api_once_with_the_event_as_idempotency_key(event, machine_api):
    assert run_next() == 1

    (call,) = machine_api.calls
    assert call.path == "/machines/M-123/stop"
    assert call.headers["idempotency-key"] == str(event.id)
    assert call.headers["content-type"] == "application/json"
    assert "authorization" not in call.headers
    assert call.body == {"machine_id": "M-123", "event_id": str(event.id), "reason": event.message}
    result = entry(event)
    assert (result["type"], result["machine_id"], result["status"], result["attempts"]) == (
        "stop_machine",
        "M-123",
        "completed",
        1,
    )
    assert result["completed_at"].endswith("Z")
    command = MachineCommand.objects.get()
    assert (command.status, command.attempt_count, command.last_error) == ("completed", 1, None)
    assert run_next() == 0 and len(machine_api.calls) == 1


def test_the_token_is_sent_when_configured(event, machine_api, machine_settings):
    machine_settings.IOTHUB_MACHINE_API_TOKEN = "plant-secret"

    run_next()

    assert machine_api.calls[0].headers["authorization"] == "Bearer plant-secret"


def test_an_error_status_is_retried_with_backoff_then_failed_with_the_error(event, machine_api, machine_settings):
    machine_api.status = 503
    machine_api.body = "maintenance"

    assert run_next() == 1
    command = MachineCommand.objects.get()
    first_retry = command.next_attempt_at - command.last_attempt_at
    assert (command.status, command.attempt_count) == ("pending", 1)
    assert entry(event) | {} == {
        "type": "stop_machine",
        "machine_id": "M-123",
        "status": "pending",
        "attempts": 1,
        "last_error": "API answered 503 Service Unavailable: maintenance",
    }
    assert run_next() == 0  # not due before its delay

    make_due()
    run_next()
    command.refresh_from_db()
    assert command.next_attempt_at - command.last_attempt_at == 2 * first_retry == timedelta(seconds=10)

    make_due()
    run_next()
    result = entry(event)
    assert (result["status"], result["error"], result["attempts"]) == (
        "failed",
        "API answered 503 Service Unavailable: maintenance",
        3,
    )
    assert result["failed_at"].endswith("Z")
    assert len(machine_api.calls) == 3
    assert {c.headers["idempotency-key"] for c in machine_api.calls} == {str(event.id)}
    command.refresh_from_db()
    assert (command.status, command.finished_at is not None) == ("failed", True)


def test_a_client_error_fails_at_once(event, machine_api):
    machine_api.status = 404
    machine_api.body = '{"detail": "unknown machine"}'

    run_next()

    result = entry(event)
    assert (result["status"], result["attempts"]) == ("failed", 1)
    assert result["error"] == 'API answered 404 Not Found: {"detail": "unknown machine"}'


def test_a_server_slower_than_the_timeout_is_an_api_timeout(event, machine_api, machine_settings):
    machine_api.delay = 2  # the timeout is 1 s
    machine_settings.IOTHUB_MACHINE_API_MAX_ATTEMPTS = 1

    run_next()

    assert entry(event) | {"failed_at": None} == {
        "type": "stop_machine",
        "machine_id": "M-123",
        "status": "failed",
        "error": "API timeout",
        "attempts": 1,
        "failed_at": None,
    }


def test_a_timeout_then_success_completes(event, machine_api):
    machine_api.delay = 2
    run_next()
    assert entry(event)["last_error"] == "API timeout"

    machine_api.delay = 0
    make_due()
    run_next()

    assert (entry(event)["status"], entry(event)["attempts"]) == ("completed", 2)


def test_an_unreachable_api_is_retried(event, machine_settings):
    machine_settings.IOTHUB_MACHINE_API_URL = "http://127.0.0.1:1"

    run_next()

    assert entry(event)["last_error"].startswith("API unreachable")
    assert MachineCommand.objects.get().status == "pending"


def test_an_unset_api_url_says_so(event, machine_settings):
    machine_settings.IOTHUB_MACHINE_API_URL = ""
    machine_settings.IOTHUB_MACHINE_API_MAX_ATTEMPTS = 1

    run_next()

    assert entry(event)["error"] == "IOTHUB_MACHINE_API_URL is not set"


def test_a_machine_id_is_one_path_segment(client, device_with_token, machine_api, machine_settings):
    device = device_with_token.device
    make_rule(device, action_config=[{"type": "stop_machine", "machine_id": "line 2/press?x=1"}])
    send(client, device_with_token.token, message(device, vibration=16.2))

    run_next()

    assert machine_api.paths() == ["/machines/line%202%2Fpress%3Fx%3D1/stop"]


def test_next_due_is_the_earliest_pending_command(event, machine_api):
    assert next_due(MachineCommandOutbox()) <= timezone.now()
    machine_api.status = 500
    run_next()
    assert next_due(MachineCommandOutbox()) == MachineCommand.objects.get().next_attempt_at > timezone.now()

    machine_api.status = 200
    make_due()
    run_next()
    assert next_due(MachineCommandOutbox()) is None


def test_an_entry_gone_from_the_event_does_not_undo_the_recorded_call(event, machine_api):
    Event.objects.filter(pk=event.pk).update(execution_results=[])

    assert run_next() == 1
    assert run_next() == 0

    assert len(machine_api.calls) == 1
    assert MachineCommand.objects.get().status == "completed"

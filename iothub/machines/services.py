"""Writes to the machine-command outbox: a `stop_machine` action enqueued inside the ingest
transaction. The worker's engine runs the commands (`iothub/machines/outbox.py`)."""

from django.db import connection

from iothub.events.models import Event
from iothub.machines.models import MachineCommand

# NOTIFY channel that wakes the worker when a command is enqueued (delivered at commit).
MACHINE_COMMANDS_CHANNEL = "iothub_machine_commands"


def machine_command_enqueue(*, event: Event, action_index: int, machine_id: str) -> MachineCommand:
    """Queue a stop of `machine_id` for an event's `stop_machine` action; the worker calls the
    machine API after the transaction commits. Nothing external is called here."""
    command = MachineCommand(event=event, action_index=action_index, machine_id=machine_id)
    command.save(force_insert=True)
    with connection.cursor() as cursor:
        # Notifications are sent at commit, and one per channel and payload per transaction.
        cursor.execute("SELECT pg_notify(%s, '')", [MACHINE_COMMANDS_CHANNEL])
    return command

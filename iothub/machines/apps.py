"""The machines app. When Django starts it registers, with the events app below it, how an
event's `stop_machine` action is queued (`iothub.events.services.action_enqueuer_register`)."""

from django.apps import AppConfig


class MachinesConfig(AppConfig):
    name = "iothub.machines"
    label = "machines"
    verbose_name = "Machine commands"

    def ready(self) -> None:
        from iothub.events.services import action_enqueuer_register
        from iothub.machines.services import machine_command_enqueue
        from iothub.rules.actions import STOP_MACHINE

        action_enqueuer_register(
            STOP_MACHINE,
            lambda *, event, action_index, action: machine_command_enqueue(
                event=event, action_index=action_index, machine_id=action["machine_id"]
            ),
        )

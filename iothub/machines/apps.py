from django.apps import AppConfig


class MachinesConfig(AppConfig):
    name = "iothub.machines"
    label = "machines"
    verbose_name = "Machine commands"

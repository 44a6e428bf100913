"""The simulator app (a management command; no models)."""

from django.apps import AppConfig


class SimulatorConfig(AppConfig):
    name = "iothub.simulator"
    label = "simulator"
    verbose_name = "Device simulator"

from django.apps import AppConfig


class DevicesConfig(AppConfig):
    name = "iothub.devices"
    label = "devices"
    verbose_name = "Devices"

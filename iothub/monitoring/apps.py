"""The monitoring app (no models)."""

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "iothub.monitoring"
    label = "monitoring"
    verbose_name = "Monitoring"

from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    name = "iothub.telemetry"
    label = "telemetry"
    verbose_name = "Telemetry"

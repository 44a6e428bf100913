from django.apps import AppConfig


class IngestConfig(AppConfig):
    name = "iothub.ingest"
    label = "ingest"
    verbose_name = "Ingest"

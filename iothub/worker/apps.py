from django.apps import AppConfig


class WorkerConfig(AppConfig):
    name = "iothub.worker"
    label = "worker"
    verbose_name = "Worker"

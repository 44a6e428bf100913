from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "iothub.api"
    label = "api"
    verbose_name = "REST API"

    def ready(self) -> None:
        # drf-spectacular finds extensions by their subclassing; importing the module registers them.
        from iothub.api import schema  # noqa: F401

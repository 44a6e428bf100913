from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "iothub.api"
    label = "api"
    verbose_name = "REST API"

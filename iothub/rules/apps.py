from django.apps import AppConfig


class RulesConfig(AppConfig):
    name = "iothub.rules"
    label = "rules"
    verbose_name = "Rules"

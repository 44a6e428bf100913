from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "iothub.events"
    label = "events"
    verbose_name = "Events"

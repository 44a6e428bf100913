from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "iothub.notifications"
    label = "notifications"
    verbose_name = "Notifications"

"""The notifications app. When Django starts it registers, with the rules app below it, the check
of what a rule's notification actions refer to (`iothub.rules.actions`)."""

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "iothub.notifications"
    label = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from iothub.notifications.selectors import notification_template_references_problems
        from iothub.rules.actions import NOTIFICATION, action_reference_check_register

        action_reference_check_register(NOTIFICATION, notification_template_references_problems)

"""The notifications app. When Django starts it registers, with the apps below it, the check of
what a rule's notification actions refer to (`iothub.rules.actions`) and how an event's
notification action is queued (`iothub.events.services.action_enqueuer_register`)."""

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "iothub.notifications"
    label = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from iothub.events.services import action_enqueuer_register
        from iothub.notifications.selectors import notification_template_references_problems
        from iothub.notifications.services import notification_deliveries_enqueue
        from iothub.rules.actions import NOTIFICATION, action_reference_check_register

        action_reference_check_register(NOTIFICATION, notification_template_references_problems)
        action_enqueuer_register(NOTIFICATION, notification_deliveries_enqueue)

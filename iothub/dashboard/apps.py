"""The dashboard app."""

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "iothub.dashboard"
    label = "dashboard"
    verbose_name = "Dashboard"

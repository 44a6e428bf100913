"""Fixtures of the ingest tests: the notification tests' webhook receiver and templates, for the
MQTT reading that must reach a webhook as an HTTP one does."""

from tests.notifications.conftest import template_factory, webhook_receiver  # noqa: F401 - fixtures

"""Fixtures shared by the whole suite. Tests talk to the real PostgreSQL, with telemetry as a
TimescaleDB hypertable wherever the server has the extension."""

import pytest
from django.core.management import call_command


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The migrated test database, then `setup_timescaledb`, as a deployment runs them."""
    with django_db_blocker.unblock():
        call_command("setup_timescaledb", stdout=open("/dev/null", "w"))  # noqa: SIM115

"""Fixtures shared by the whole suite. Tests talk to the real PostgreSQL, with telemetry as a
TimescaleDB hypertable wherever the server has the extension."""

import io
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from iothub.accounts.roles import OPERATOR_GROUP, VIEWER_GROUP
from iothub.devices.services import device_create, device_type_create


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The migrated test database, then `setup_timescaledb`, as a deployment runs them."""
    with django_db_blocker.unblock():
        call_command("setup_timescaledb", stdout=io.StringIO())


def _user_with_role(username: str, group: str | None, *, superuser: bool = False) -> User:
    if superuser:
        return User.objects.create_superuser(username, f"{username}@example.com", "pw-" + username)
    user = User.objects.create_user(username, f"{username}@example.com", "pw-" + username)
    if group:
        # get_or_create: a `transaction=True` test flushes the groups the migration created.
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def _client_for(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def operator_user(db) -> User:
    return _user_with_role("olga", OPERATOR_GROUP)


@pytest.fixture
def viewer_user(db) -> User:
    return _user_with_role("victor", VIEWER_GROUP)


@pytest.fixture
def admin_user(db) -> User:
    return _user_with_role("ada", None, superuser=True)


@pytest.fixture
def operator_client(operator_user) -> APIClient:
    """An API client authenticated with the token of a user in group `operator`."""
    return _client_for(operator_user)


@pytest.fixture
def viewer_client(viewer_user) -> APIClient:
    """An API client authenticated with the token of a user in group `viewer`."""
    return _client_for(viewer_user)


@pytest.fixture
def admin_client_api(admin_user) -> APIClient:
    return _client_for(admin_user)


@pytest.fixture
def anonymous_client() -> APIClient:
    return APIClient()


@pytest.fixture
def vibration_type(db):
    """The spec's example type: vibration in mm_s, expected 0..25."""
    return device_type_create(
        name="vibration_sensor",
        metric_name="vibration",
        metric_unit="mm_s",
        description="Vibration sensor on a press",
        metric_min=Decimal("0"),
        metric_max=Decimal("25"),
    )


@pytest.fixture
def device_with_token(vibration_type):
    """The spec's example device `VIB-SN-001` in Workshop A, with its plaintext token."""
    return device_create(device_type=vibration_type, name="Press 3", serial_number="VIB-SN-001", location="Workshop A")


@pytest.fixture
def device(device_with_token):
    return device_with_token.device

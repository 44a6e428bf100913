"""Fixtures of the worker tests: the machine API on loopback, and settings pointing at it."""

import pytest

from tests.worker.machine_api import MachineApi, serve


@pytest.fixture
def machine_api():
    api = MachineApi()
    server, thread = serve(api)
    yield api
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def machine_settings(settings, machine_api):
    settings.IOTHUB_MACHINE_API_URL = machine_api.url
    settings.IOTHUB_MACHINE_API_TOKEN = ""
    settings.IOTHUB_MACHINE_API_TIMEOUT_SECONDS = 1
    settings.IOTHUB_MACHINE_API_MAX_ATTEMPTS = 3
    settings.IOTHUB_MACHINE_API_RETRY_DELAY_SECONDS = 5
    return settings

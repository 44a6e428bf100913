"""Fixtures of the tests that stop and start PostgreSQL: a private cluster (initdb paid once per
session, never the shared server), the hub's database on it, and the hub as real processes
(gunicorn with gunicorn.conf.py, `manage.py run_worker`) pointed at it and driven over HTTP."""

import secrets
from dataclasses import dataclass

import httpx
import pytest

from tests.hubprocess import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    Device,
    Gunicorn,
    HubApi,
    admin_api_token,
    hub_env,
    prepare_database,
    reading,
)
from tests.pgcluster import PrivateCluster

# Seconds a request waits for a pooled connection (DB_POOL_TIMEOUT): what a request that needs the
# database takes to answer 503 while it is down. Short, so that the tests are, yet well above the
# second the first request after a restart may take: the pool pauses a second between two pooled
# connections that fail their check, before it hands out a new one.
POOL_TIMEOUT = 4


@pytest.fixture(scope="session")
def private_cluster():
    # fsync off: initdb and the migrations are faster; no stop mode can lose what was written.
    cluster = PrivateCluster(durable=False)
    cluster.start()
    yield cluster
    cluster.destroy()


@dataclass(frozen=True)
class HubDatabase:
    url: str
    api_token: str


@pytest.fixture(scope="session")
def hub_database(private_cluster) -> HubDatabase:
    url = prepare_database(private_cluster, "iothub")
    return HubDatabase(url, admin_api_token(hub_env(url)))


@pytest.fixture
def cluster(private_cluster):
    """The private cluster, running again after the test whatever the test did to it."""
    yield private_cluster
    if not private_cluster.running:
        private_cluster.start()


@dataclass
class Hub:
    server: Gunicorn
    env: dict[str, str]
    api: HubApi

    @property
    def url(self) -> str:
        return self.server.url

    def device(self) -> Device:
        """A new device of a new type, with its token."""
        tag = secrets.token_hex(4)
        return self.api.device_create(self.api.device_type_create(f"type-{tag}"), f"SN-{tag}")

    def get(self, path: str) -> httpx.Response:
        return self.api.client.get(path)

    def ingest(self, device: Device, **metrics: float) -> httpx.Response:
        return httpx.post(
            f"{self.url}/api/v1/telemetry/",
            json=reading(device, **metrics),
            headers={"Authorization": f"Bearer {device.token}"},
            timeout=30,
        )

    def login(self) -> httpx.Client:
        """A browser's session on the dashboard, logged in as the administrator."""
        browser = httpx.Client(base_url=self.url, timeout=30)
        browser.get("/login/").raise_for_status()
        answer = browser.post(
            "/login/",
            data={
                "username": ADMIN_USERNAME,
                "password": ADMIN_PASSWORD,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
        )
        assert answer.status_code == 302, answer.text
        return browser


@pytest.fixture
def hub(hub_database, cluster, tmp_path):
    """gunicorn with the project's gunicorn.conf.py on the private cluster: one process (so that the
    connections it pools are the ones every request meets) with gunicorn.conf.py's two threads."""
    env = hub_env(hub_database.url, DB_POOL_TIMEOUT=str(POOL_TIMEOUT))
    server = Gunicorn(env, tmp_path / "gunicorn.log", workers=1).start()
    api = HubApi(server.url, hub_database.api_token)
    yield Hub(server, env, api)
    api.close()
    server.stop()

"""The hub while PostgreSQL is down and after it comes back, as real processes over HTTP: 503 with
Retry-After (never 500) while it is unreachable, no failed request after it is back, and a worker
that carries on by itself."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from iothub.db import DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS
from tests.notifications.servers import WebhookReceiver
from tests.resilience.conftest import POOL_TIMEOUT
from tests.worker.process import WorkerProcess


def assert_unavailable_json(response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert response.headers["Content-Type"] == "application/json"
    assert response.content == DATABASE_UNAVAILABLE.body
    assert "unreachable" in response.json()["detail"]


def test_while_the_database_is_down_the_api_and_ingest_answer_503_with_retry_after(hub, cluster):
    device = hub.device()
    assert hub.get("/api/v1/devices/").status_code == 200

    cluster.stop("immediate")
    started = time.monotonic()
    listing = hub.get("/api/v1/devices/")
    stored = hub.ingest(device, vibration=3.0)
    refused = hub.get(f"/api/v1/devices/{device.id}/telemetry/latest/")

    for response in (listing, stored, refused):
        assert_unavailable_json(response)
    # Each waited for a pooled connection as long as DB_POOL_TIMEOUT allows, and no longer.
    assert time.monotonic() - started < 3 * (POOL_TIMEOUT + 2)

    cluster.start()
    assert hub.get("/api/v1/devices/").status_code == 200
    assert hub.ingest(device, vibration=3.0).status_code == 201


def test_while_the_database_is_down_ingest_answers_503_at_once_not_after_a_pool_timeout(hub, cluster):
    """The first batch that finds the database gone waits for a pooled connection; the ingest
    writer then checks with a short connection attempt instead, so the next requests are answered
    at once, and the first after the database is back is stored."""
    device = hub.device()
    assert hub.ingest(device, vibration=3.0).status_code == 201

    cluster.stop("immediate")
    assert_unavailable_json(hub.ingest(device, vibration=3.0))
    waits = []
    for _ in range(10):
        started = time.monotonic()
        assert_unavailable_json(hub.ingest(device, vibration=3.0))
        waits.append(time.monotonic() - started)
    assert max(waits) < POOL_TIMEOUT / 2, waits

    cluster.start()
    deadline = time.monotonic() + 10
    while (status := hub.ingest(device, vibration=3.0).status_code) != 201 and time.monotonic() < deadline:
        assert status == 503
        time.sleep(0.2)
    assert status == 201


def test_while_the_database_is_down_a_logged_in_operator_gets_a_503_page(hub, cluster):
    browser = hub.login()
    assert browser.get("/").status_code == 200

    cluster.stop("immediate")
    for path in ("/", "/devices/", "/admin/"):
        page = browser.get(path)
        assert page.status_code == 503, (path, page.text[:300])
        assert page.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
        assert page.headers["Content-Type"].startswith("text/html")
        assert "The database is unreachable" in page.text
        # The page reloads itself when the client is asked to retry.
        assert f'<meta http-equiv="refresh" content="{RETRY_AFTER_SECONDS}">' in page.text

    cluster.start()
    assert browser.get("/").status_code == 200


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_an_idle_hub_serves_its_first_requests_after_a_database_restart(hub, cluster, mode):
    device = hub.device()
    # Both threads at once, a few times: the process pools a connection for each.
    with ThreadPoolExecutor(2) as pool:
        assert set(pool.map(lambda _: hub.get("/api/v1/devices/").status_code, range(6))) == {200}

    cluster.stop(mode)
    cluster.start()

    # Every pooled connection died with the server; the hub must notice before a request does.
    first = [hub.get("/api/v1/devices/").status_code, hub.ingest(device, vibration=3.0).status_code]
    with ThreadPoolExecutor(2) as pool:
        concurrent = list(pool.map(lambda _: hub.get("/api/v1/devices/").status_code, range(4)))
    assert first == [200, 201], hub.server.log_tail()
    assert concurrent == [200] * 4, hub.server.log_tail()


def test_after_a_long_outage_the_hub_serves_again_within_seconds(hub, cluster):
    """The pool retries a lost connection with a doubling delay: without a bound on that, a hub
    that saw a 20 s outage would try again only some 30 s after it began, 8 to 14 s after the
    database was back."""
    assert hub.get("/api/v1/devices/").status_code == 200
    answers: list[tuple[float, int]] = []  # (when sent, status), from a client polling all along
    polling = threading.Event()

    def poll():
        while not polling.is_set():
            sent = time.monotonic()
            answers.append((sent, hub.get("/api/v1/devices/").status_code))
            time.sleep(0.2)

    client = threading.Thread(target=poll)
    client.start()
    try:
        cluster.stop("immediate")
        time.sleep(20)
        cluster.start()
        back = time.monotonic()
        deadline = back + 30
        while not any(sent > back and status == 200 for sent, status in answers) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        polling.set()
        client.join()
    assert {status for _, status in answers} <= {200, 503}
    served = [sent - back for sent, status in answers if sent > back and status == 200]
    assert served, "not served again within 30 s of the database's return"
    assert min(served) < 5


def raised_events(hub, response) -> list:
    """The events an ingest reply lists, once it is a 201."""
    assert response.status_code == 201, f"{response.text}\n{hub.server.log_tail()}"
    return response.json()["events"]


def wait_for_webhooks(receiver: WebhookReceiver, count: int, timeout: float) -> float:
    """Seconds until `count` webhooks have arrived; fails after `timeout`."""
    started = time.monotonic()
    while len(receiver.received) < count:
        assert time.monotonic() - started < timeout, f"{len(receiver.received)} of {count} webhooks arrived"
        time.sleep(0.05)
    return time.monotonic() - started


def test_the_worker_delivers_again_by_itself_after_the_database_restarts(hub, cluster):
    receiver = WebhookReceiver(hub.env["IOTHUB_WEBHOOK_SECRET"]).start()
    device = hub.device()
    hub.api.webhook_rule_create(device, receiver.url("/hook"))
    worker = WorkerProcess(machine_api_url="", **{**hub.env, "LOG_LEVEL": "INFO"})
    try:
        worker.start()
        assert raised_events(hub, hub.ingest(device, vibration=30.0))
        wait_for_webhooks(receiver, 1, timeout=10)

        cluster.stop("immediate")
        time.sleep(3)  # the worker meets the lost connections: its jobs fail, its LISTEN breaks
        cluster.start()
        # Long enough for a job that failed meanwhile to end its 5 s rest: the worker is idle again,
        # and only a NOTIFY on a LISTEN connection it opened again wakes it before a minute is over.
        time.sleep(8)

        assert raised_events(hub, hub.ingest(device, vibration=31.0))
        assert wait_for_webhooks(receiver, 2, timeout=20) < 3
        assert worker.process.poll() is None, worker.log()
        assert all(webhook.verified and webhook.status == 200 for webhook in receiver.received)
    finally:
        worker.stop()
        receiver.stop()

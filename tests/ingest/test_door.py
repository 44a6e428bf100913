"""The hub served as in production (gunicorn with the ASGI door for ingest and Django for the rest),
over real sockets: the door answers as the Django view does, chunked uploads, slow and idle clients,
idempotent retries, and several processes writing into new TimescaleDB chunks at once."""

import json
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from iothub.devices.services import device_create
from iothub.events.models import Event
from iothub.ingest.models import IdempotencyKey
from iothub.telemetry.models import Telemetry
from tests.hub_server import HubServer, http_exchange, read_response
from tests.rules.helpers import make_rule

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/api/v1/telemetry/"
BODY_TIMEOUT = 3  # seconds the hub under test waits for a request body


@pytest.fixture(scope="module")
def hub(django_db_setup, django_db_blocker):
    server = HubServer(workers=2, IOTHUB_HTTP_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT), IOTHUB_THREADS="2").start()
    yield server
    server.stop()


def message(created, **metrics) -> dict:
    return {"version": "0.0.1", "serial_number": created.device.serial_number, "metrics": metrics or {"vibration": 4.2}}


def post_request(hub, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", f"Host: 127.0.0.1:{hub.port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def post(hub, created_or_token, body, **headers) -> tuple[int, dict, dict]:
    token = created_or_token if isinstance(created_or_token, str) else created_or_token.token
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers}
    with hub.connect() as sock:
        status, response_headers, response_body = http_exchange(sock, post_request(hub, raw, all_headers))
    try:
        return status, response_headers, json.loads(response_body)
    except ValueError:  # not the hub's JSON: a server error page, kept for the assertion's message
        return status, response_headers, {"not JSON": response_body.decode(errors="replace")}


@pytest.fixture
def created(vibration_type):
    return device_create(device_type=vibration_type, name="Press 3", serial_number="VIB-SN-001", location="Hall")


# --- The same answers as the Django view -------------------------------------------------------


def test_a_stored_message_is_answered_after_commit_as_the_django_view_answers(hub, created):
    status, headers, body = post(hub, created, message(created, vibration=5.5))

    assert status == 201, body
    row = Telemetry.objects.get(device=created.device)
    assert body == {
        "count": 1,
        "readings": [{"id": row.id, "timestamp": row.timestamp.isoformat().replace("+00:00", "Z")}],
        "events": [],
    }
    assert headers["content-type"] == "application/json" and headers["x-request-id"]
    view = Client().post(
        PATH,
        data=json.dumps(message(created)),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {created.token}",
    )
    assert view.status_code == 201 and set(view.json()) == set(body)


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        (b'{"version": "0.0.1",', {}, 400, "body"),
        (json.dumps({"version": "0.0.1", "metrics": {"vibration": 1}}).encode(), {}, 400, "serial_number"),
        (b"{}", {"Content-Type": "text/plain"}, 415, "Content-Type"),
        (b"{}", {"Idempotency-Key": "has space"}, 400, "Idempotency-Key"),
    ],
)
def test_refusals_are_the_django_views_word_for_word(hub, created, body, headers, status, field):
    if field == "serial_number":
        body = json.dumps({"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"vibration": "x"}}).encode()
        field = "metrics.vibration"
    door_status, _, door_body = post(hub, created, body, **headers)
    django_headers = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items() if k != "Content-Type"}
    view = Client().post(
        PATH,
        data=body,
        content_type=headers.get("Content-Type", "application/json"),
        HTTP_AUTHORIZATION=f"Bearer {created.token}",
        **django_headers,
    )

    assert (door_status, door_body) == (view.status_code, view.json())
    assert door_status == status and door_body["errors"][0]["field"] == field
    assert Telemetry.objects.count() == 0


def test_an_unknown_token_and_no_token_are_401_with_the_scheme(hub, created):
    status, headers, body = post(hub, "iot_unknown", message(created))
    assert status == 401 and headers["www-authenticate"].startswith("Bearer") and "Unknown" in body["detail"]
    with hub.connect() as sock:
        raw = post_request(hub, b"{}", {"Content-Type": "application/json"})
        status, headers, _ = http_exchange(sock, raw)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")


# --- Chunked uploads ----------------------------------------------------------------------------


def chunked_request(hub, token: str, body: bytes, chunk: int = 7) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + chunk]), body[i : i + chunk]) for i in range(0, len(body), chunk)
    )
    return head + chunks + b"0\r\n\r\n"


def test_a_chunked_upload_is_stored(hub, created):
    with hub.connect() as sock:
        status, _, body = http_exchange(
            sock, chunked_request(hub, created.token, json.dumps(message(created)).encode())
        )

    assert status == 201, body
    assert Telemetry.objects.filter(device=created.device).count() == 1


def test_a_chunked_upload_over_the_cap_is_refused_with_413(hub, created, settings):
    batch = json.dumps([message(created)] * 20000).encode()  # well over the 1 MiB cap
    assert len(batch) > settings.IOTHUB_INGEST_MAX_BODY_BYTES
    with hub.connect() as sock:
        status, _, body = http_exchange(sock, chunked_request(hub, created.token, batch, chunk=65536))

    assert status == 413 and json.loads(body)["errors"][0]["field"] == "body"
    assert Telemetry.objects.count() == 0


def test_a_chunked_request_reaches_django_routes_too(hub, operator_user):
    from rest_framework.authtoken.models import Token

    key = Token.objects.create(user=operator_user).key
    body = json.dumps({"name": "pump", "metric_name": "pressure", "metric_unit": "bar"}).encode()
    head = (
        f"POST /api/v1/device-types/ HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\nAuthorization: Token {key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with hub.connect() as sock:
        status, _, response = http_exchange(sock, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))

    assert status == 201, response
    assert json.loads(response)["name"] == "pump"


# --- Slow and idle clients ----------------------------------------------------------------------


def test_slow_and_idle_clients_hold_no_thread_and_the_hub_answers_others_at_once(hub, created):
    """Forty sockets trickling a body a byte at a time, and forty that sent nothing at all, while
    two Django threads and one writer per process serve everyone else."""
    trickling, idle = [], []
    for _ in range(40):
        sock = hub.connect()
        sock.sendall(
            post_request(
                hub, b"", {"Authorization": f"Bearer {created.token}", "Content-Type": "application/json"}
            ).replace(b"Content-Length: 0", b"Content-Length: 100")
        )
        trickling.append(sock)
        idle.append(hub.connect())
        # The same on a Django route.
        slow = hub.connect()
        slow.sendall(
            b"POST /api/v1/device-types/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        trickling.append(slow)
    try:
        for sock in trickling:
            sock.send(b" ")
        started = time.monotonic()
        status, _, _ = post(hub, created, message(created))
        ingest_seconds = time.monotonic() - started
        started = time.monotonic()
        with hub.connect() as sock:
            health, _, _ = http_exchange(
                sock, f"GET /api/v1/health/ HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\n\r\n".encode()
            )
        health_seconds = time.monotonic() - started

        assert (status, health) == (201, 200)
        # Answered while every slow client still holds its socket (they time out after BODY_TIMEOUT).
        assert ingest_seconds < BODY_TIMEOUT and health_seconds < BODY_TIMEOUT, (ingest_seconds, health_seconds)

        # The slow ones get a 408 naming the body when the time allowed has passed.
        status, _, body = read_response(trickling[0])
        assert status == 408 and json.loads(body)["errors"][0]["field"] == "body"
    finally:
        for sock in trickling + idle:
            sock.close()


# --- Idempotent retries -------------------------------------------------------------------------


def test_a_retry_with_the_same_key_gets_the_first_answer_and_stores_nothing_twice(hub, created):
    make_rule(created.device, cooldown_minutes=0)
    key = str(uuid.uuid4())
    first = post(hub, created, message(created, vibration=20.0), **{"Idempotency-Key": key})
    again = post(hub, created, message(created, vibration=20.0), **{"Idempotency-Key": key})

    assert first[0] == again[0] == 201
    assert again[2] == first[2] and len(first[2]["events"]) == 1
    assert again[1]["idempotent-replayed"] == "true" and "idempotent-replayed" not in first[1]
    assert Telemetry.objects.count() == 1 and Event.objects.count() == 1
    assert IdempotencyKey.objects.get(key=key).response == json.dumps(first[2], separators=(",", ":"))


def test_concurrent_retries_with_one_key_store_once_and_all_get_the_same_answer(hub, created):
    make_rule(created.device, cooldown_minutes=0)
    key = str(uuid.uuid4())

    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(
                lambda _: post(hub, created, message(created, vibration=20.0), **{"Idempotency-Key": key}), range(16)
            )
        )

    assert {a[0] for a in answers} == {201}
    assert len({json.dumps(a[2]) for a in answers}) == 1
    assert Telemetry.objects.count() == 1 and Event.objects.count() == 1


def test_the_same_key_with_another_body_is_refused_with_422(hub, created):
    post(hub, created, message(created, vibration=1.0), **{"Idempotency-Key": "k-1"})
    status, _, body = post(hub, created, message(created, vibration=2.0), **{"Idempotency-Key": "k-1"})

    assert status == 422 and body["errors"][0]["field"] == "Idempotency-Key"
    assert Telemetry.objects.count() == 1


def test_keys_are_the_devices_own(hub, created, vibration_type):
    other = device_create(device_type=vibration_type, name="Press 4", serial_number="VIB-SN-002")
    assert post(hub, created, message(created), **{"Idempotency-Key": "shared"})[0] == 201
    assert post(hub, other, message(other), **{"Idempotency-Key": "shared"})[0] == 201
    assert Telemetry.objects.count() == 2


# --- Concurrency --------------------------------------------------------------------------------


def test_twenty_concurrent_readings_over_the_threshold_raise_one_event(hub, created):
    make_rule(created.device, cooldown_minutes=15)
    barrier = threading.Barrier(20)

    def send(_):
        barrier.wait(10)
        return post(hub, created, message(created, vibration=16.2))

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(send, range(20)))

    assert [a[0] for a in answers] == [201] * 20
    raised = [e for a in answers for e in a[2]["events"]]
    assert len(raised) == 1 and list(Event.objects.values_list("id", flat=True)) == [raised[0]["id"]]


DEVICES = 30
CHUNKS = 20  # weeks, one TimescaleDB chunk each


def test_many_processes_writing_into_new_chunks_at_once_never_fail(vibration_type):
    """Three hub processes (three writers) and thirty devices posting readings dated in twenty
    chunks that do not exist yet, several rounds, each on a table emptied of its chunks: every
    request is stored. Before the writer inserted readings ahead of any device update, concurrent
    transactions deadlocked on the chunks' foreign keys."""
    created = [
        device_create(device_type=vibration_type, name=f"Press {n}", serial_number=f"VIB-CH-{n}")
        for n in range(DEVICES)
    ]
    server = HubServer(workers=3).start()
    try:
        now = timezone.now()
        for _ in range(3):
            with connection.cursor() as cursor:
                cursor.execute("TRUNCATE telemetry")  # drops the hypertable's chunks

            def send(n: int):
                device = created[n % DEVICES]
                at = now - timedelta(weeks=n % CHUNKS, minutes=n)
                body = {**message(device), "timestamp": at.isoformat()}
                return post(server, device, body)[0]

            with ThreadPoolExecutor(32) as pool:
                statuses = list(pool.map(send, range(600)))
            assert statuses == [201] * 600, server.log()[-3000:]
            assert Telemetry.objects.count() == 600
    finally:
        server.stop()


def test_an_open_connection_survives_keep_alive_across_requests(hub, created):
    """One keep-alive connection, many requests: the door and Django share it."""
    with hub.connect() as sock:
        for _ in range(5):
            raw = post_request(
                hub,
                json.dumps(message(created)).encode(),
                {"Authorization": f"Bearer {created.token}", "Content-Type": "application/json"},
            )
            assert http_exchange(sock, raw)[0] == 201
            assert (
                http_exchange(sock, f"GET /api/v1/health/ HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\n\r\n".encode())[0]
                == 200
            )
    assert Telemetry.objects.count() == 5


def test_nothing_listens_beyond_the_door_and_django(hub):
    with socket.create_connection(("127.0.0.1", hub.port)) as sock:
        status, _, _ = http_exchange(sock, f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{hub.port}\r\n\r\n".encode())
    assert status == 405  # Django's view answers the other methods

"""`./scripts/run` end to end: a real run on a free port, its printed credentials used, a clean stop.

Each test runs the script against a scratch database of the test server (or, for the fallback, an
embedded PostgreSQL in a temporary folder), reusing this virtual environment through IOTHUB_VENV.
"""

import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import get_commands
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "Ctrl-C stops the hub."
START_TIMEOUT = 240  # a first run installs into the environment
STOP_TIMEOUT = 45


def free_port(start: int = 8100) -> int:
    for port in range(start, start + 900):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port from 8100 on")


def server_url(dbname: str) -> str:
    db = settings.DATABASES["default"]
    user = urllib.parse.quote(db["USER"] or "postgres", safe="")
    password = f":{urllib.parse.quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    host = db["HOST"] or "127.0.0.1"
    host = urllib.parse.quote(host, safe="") if host.startswith("/") else host
    return f"postgresql://{user}{password}@{host}:{db['PORT'] or 5432}/{dbname}"


class RunningHub:
    """`./scripts/run` in its own process group, its output collected line by line."""

    def __init__(self, env: dict[str, str], *options: str):
        self.lines: list[str] = []
        self.env = env
        self.process = subprocess.Popen(
            [str(ROOT / "scripts" / "run"), *options],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while READY_LINE not in self.lines:
            if self.process.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"scripts/run exited with {self.process.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"scripts/run printed no {READY_LINE!r} in {START_TIMEOUT} s:\n{self.output}")
            time.sleep(0.2)

    def value(self, pattern: str) -> str:
        match = re.search(pattern, self.output)
        assert match, f"{pattern!r} not in the output:\n{self.output}"
        return match.group(1)

    def terminate(self) -> int:
        """SIGTERM to the script alone, as a process manager sends it; it must stop what it started."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(STOP_TIMEOUT)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill_group(self) -> None:
        if self.group_alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def hub_env(tmp_path: Path, *, database_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "IOTHUB_ADMIN_PASSWORD", "DEBUG"}}
    # The hub's own MQTT broker, on ports of its own (the machine may run a broker on 1883), away
    # from the ports a test picks next to the hub's.
    mqtt_port = free_port(port + 300)
    env.update(
        DATABASE_URL=database_url,
        IOTHUB_PORT=str(port),
        IOTHUB_MQTT_PORT=str(mqtt_port),
        IOTHUB_MQTT_TLS_PORT=str(free_port(mqtt_port + 1)),
        IOTHUB_VAR_DIR=str(tmp_path / "var"),
        IOTHUB_VENV=sys.prefix,
        IOTHUB_WORKERS="1",
        IOTHUB_THREADS="2",
    )
    return env


def get(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Token {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - the hub's own http URL
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def admin_login(base: str, username: str, password: str) -> str:
    """Log in through the admin's own form; returns the path the login redirected to."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    form = opener.open(f"{base}/admin/login/", timeout=10).read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    data = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": csrf, "username": username, "password": password, "next": "/admin/"}
    ).encode()
    headers = {"Referer": f"{base}/admin/"}
    request = urllib.request.Request(f"{base}/admin/login/", data=data, headers=headers)  # noqa: S310
    with opener.open(request, timeout=10) as response:
        return urllib.parse.urlsplit(response.url).path


def assert_printed_credentials_work(hub: RunningHub, base: str, database_url: str) -> None:
    api_token = hub.value(r"API token +(\S+)")
    password = hub.value(r"Login +admin, password (\S+) +\(new")
    device_token = hub.value(r'Device +VIB-SN-001 "Press 3", token (iot_\S+)')

    # The API refuses anonymous requests and accepts the printed token.
    assert get(f"{base}/api/v1/") == 401
    assert get(f"{base}/api/v1/", api_token) == 200
    assert get(f"{base}/api/schema/", api_token) == 200
    # The printed password logs in to the admin (a failed login stays on the login page).
    assert admin_login(base, "admin", password) == "/admin/"
    assert f'curl -H "Authorization: Token {api_token}" {base}/api/v1/devices/' in hub.output
    # The printed device token is the one the database knows (it keeps only the hash).
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT token_hash FROM devices WHERE serial_number = 'VIB-SN-001'").fetchone()
    assert stored == (hashlib.sha256(device_token.encode()).hexdigest(),)


def assert_stops_cleanly(hub: RunningHub, port: int) -> None:
    assert hub.terminate() == 0, hub.output
    deadline = time.monotonic() + 5
    while hub.group_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not hub.group_alive(), "scripts/run left processes of its group running"
    for listening in (port, int(hub.env["IOTHUB_MQTT_PORT"])):  # nothing listens there any more
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", listening), timeout=5).close()


@pytest.fixture
def scratch_database():
    name = f"iothub_run_{secrets.token_hex(4)}"
    yield name
    with psycopg.connect(server_url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_run_serves_the_hub_and_its_printed_credentials_work(tmp_path, scratch_database):
    port = free_port()
    database_url = server_url(scratch_database)
    hub = RunningHub(hub_env(tmp_path, database_url=database_url, port=port))
    try:
        hub.wait_ready()
        base = f"http://127.0.0.1:{port}"

        assert f"database {scratch_database} (created)" in hub.output
        assert f"IoT Hub Alpha is serving at {base}/" in hub.output
        # The worker runs beside gunicorn as soon as the hub has one.
        if "run_worker" in get_commands():
            assert "Worker     running (manage.py run_worker)" in hub.output
        else:
            assert "Worker     none yet" in hub.output
        assert_printed_credentials_work(hub, base, database_url)
        # The hub's broker serves MQTT, and its consumer runs.
        mqtt_port = hub.env["IOTHUB_MQTT_PORT"]
        assert f"MQTT       mqtt://127.0.0.1:{mqtt_port}  (TLS mqtts://127.0.0.1:" in hub.output
        assert "Ingest     MQTT consumer running (manage.py run_ingest)" in hub.output
        # A SECRET_KEY was generated for the checkout, readable by its owner only.
        key_file = tmp_path / "var" / "secret_key"
        assert len(key_file.read_text().strip()) >= 50
        assert key_file.stat().st_mode & 0o077 == 0

        assert_stops_cleanly(hub, port)
    finally:
        hub.kill_group()


def test_run_without_a_postgresql_starts_an_embedded_one_and_says_timescaledb_is_off(tmp_path):
    port = free_port()
    nothing_listens = free_port(port + 1)  # free now, and nothing of ours will listen there
    pgdata = tmp_path / "var" / "postgres"
    hub = RunningHub(
        hub_env(tmp_path, database_url=f"postgresql://postgres@127.0.0.1:{nothing_listens}/iothub", port=port)
    )
    try:
        hub.wait_ready()
        base = f"http://127.0.0.1:{port}"

        url = f"postgresql://postgres@127.0.0.1:{nothing_listens}/iothub"
        assert f"no PostgreSQL answers at {url}" in hub.output
        assert "using an embedded PostgreSQL" in hub.output
        assert "TimescaleDB features are OFF" in hub.output
        assert (pgdata / "PG_VERSION").exists()
        embedded_url = hub.value(r"Database +(postgresql://\S+)")
        assert_printed_credentials_work(hub, base, embedded_url)

        assert_stops_cleanly(hub, port)
        assert not (pgdata / "postmaster.pid").exists(), "the embedded PostgreSQL is still running"
    finally:
        hub.kill_group()
        if (pgdata / "postmaster.pid").exists():
            runlib = ROOT / "scripts" / "runlib.py"
            subprocess.run([sys.executable, str(runlib), "embedded-stop", str(pgdata)], check=False)


def post_json(url: str, body: dict, headers: dict[str, str]) -> dict:
    data = json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the hub's own http URL
        url, data=data, headers={"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def get_json(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def test_the_readme_demo_a_reading_over_the_threshold_emails_calls_the_webhook_and_completes(
    tmp_path, scratch_database
):
    """The README's demo, step by step: `./scripts/run --demo-alerts`, then the reading over the
    rule's threshold posted as the device; the email and the verified webhook show in the run's
    output, and the event's execution_results entry completes with both sent."""
    port, smtp_port = free_port(), free_port(8700)
    webhook_port = free_port(smtp_port + 1)
    env = hub_env(tmp_path, database_url=server_url(scratch_database), port=port)
    env.update(IOTHUB_DEMO_SMTP_PORT=str(smtp_port), IOTHUB_DEMO_WEBHOOK_PORT=str(webhook_port))
    hub = RunningHub(env, "--demo-alerts")
    try:
        hub.wait_ready()
        base = f"http://127.0.0.1:{port}"
        api_token = hub.value(r"API token +(\S+)")
        device_token = hub.value(r'Device +VIB-SN-001 "Press 3", token (iot_\S+)')
        assert 'rule "High vibration" (vibration > 15)' in hub.output

        reply = post_json(
            f"{base}/api/v1/telemetry/",
            {"version": "0.0.1", "serial_number": "VIB-SN-001", "metrics": {"vibration": 16.2}},
            {"Authorization": f"Bearer {device_token}"},
        )
        (event,) = reply["events"]
        assert event["message"] == 'Vibration 16.2 mm_s > 15 on "Press 3" (Workshop A), rule "High vibration"'

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            results = get_json(f"{base}/api/v1/events/{event['id']}/", api_token)["execution_results"]
            if results[0]["status"] == "completed":
                break
            time.sleep(0.5)
        assert results[0]["status"] == "completed", results
        assert (results[0]["sent_count"], results[0]["failed_count"]) == (2, 0)
        assert "email to ops@example.com: warning: High vibration on Press 3 (Workshop A)" in hub.output
        assert re.search(r"webhook /hooks id ntf_\S+: signature verified", hub.output), hub.output

        assert_stops_cleanly(hub, port)
    finally:
        hub.kill_group()


def test_the_readme_demo_over_mqtt_the_printed_mosquitto_pub_line_raises_the_alert(tmp_path, scratch_database):
    """The README's demo with the device publishing over MQTT: the mosquitto_pub line the run
    printed, as it is; the reading reaches the rule through the broker and the consumer, and the
    email and the verified webhook show in the run's output."""
    mosquitto_pub = shutil.which("mosquitto_pub")
    if mosquitto_pub is None:
        pytest.fail("mosquitto_pub is not installed: apt-get install mosquitto-clients (.ci/run does it)")
    port, smtp_port = free_port(), free_port(8700)
    webhook_port = free_port(smtp_port + 1)
    env = hub_env(tmp_path, database_url=server_url(scratch_database), port=port)
    env.update(IOTHUB_DEMO_SMTP_PORT=str(smtp_port), IOTHUB_DEMO_WEBHOOK_PORT=str(webhook_port))
    hub = RunningHub(env, "--demo-alerts")
    try:
        hub.wait_ready()
        line = hub.value(r"\n  (mosquitto_pub .+)")
        assert f"-p {env['IOTHUB_MQTT_PORT']} " in line and "-t devices/VIB-SN-001/telemetry" in line

        subprocess.run([mosquitto_pub, *shlex.split(line)[1:]], check=True, timeout=30)

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not re.search(
            r"webhook /hooks id ntf_\S+: signature verified", hub.output
        ):
            time.sleep(0.5)
        assert "email to ops@example.com: warning: High vibration on Press 3 (Workshop A): vibration 16.2" in hub.output
        assert re.search(r"webhook /hooks id ntf_\S+: signature verified", hub.output), hub.output

        assert_stops_cleanly(hub, port)
    finally:
        hub.kill_group()

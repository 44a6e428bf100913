"""The hub as real processes on a database of its own, for tests and benchmarks that drive it over
HTTP: the database prepared as a deployment prepares it (`migrate`, `setup_timescaledb`), an
administrator's API token, gunicorn started with the project's `gunicorn.conf.py`, and
`manage.py run_worker` processes.

Nothing here imports Django settings: the processes get everything from their environment
(`hub_env`), as in production.
"""

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.pgcluster import PrivateCluster, free_port

ROOT = Path(__file__).resolve().parent.parent
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "resilience-admin-pw"  # a throwaway database's login


def hub_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a hub process on `database_url`: production settings (DEBUG off), a
    throwaway secret key, webhooks to loopback allowed and signed with a fresh secret."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "iothub.settings",
        "DATABASE_URL": database_url,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "IOTHUB_WEBHOOK_SECRET": secret,
        "IOTHUB_WEBHOOK_ALLOW_PRIVATE": "true",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def manage(env: dict[str, str], *args: str) -> str:
    """Run `manage.py <args>` to its end; its standard output."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def prepare_database(cluster: PrivateCluster, name: str) -> str:
    """A new database on `cluster`, migrated and set up as a deployment does; returns its URL."""
    url = cluster.create_database(name)
    env = hub_env(url)
    manage(env, "migrate", "--verbosity", "0")
    manage(env, "setup_timescaledb")
    return url


def admin_api_token(env: dict[str, str]) -> str:
    """Ensure the superuser ADMIN_USERNAME (password ADMIN_PASSWORD) and return its API token."""
    script = (
        "from iothub.accounts.services import admin_login_ensure; "
        f"print(admin_login_ensure(username={ADMIN_USERNAME!r}, password={ADMIN_PASSWORD!r}).api_token)"
    )
    return manage(env, "shell", "-c", script).strip().splitlines()[-1]


def terminate(process: subprocess.Popen | None, timeout: float = 30) -> None:
    """Stop a process the way a supervisor does: SIGTERM, and SIGKILL if it is still there after
    `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Gunicorn:
    """`gunicorn -c gunicorn.conf.py` as production starts it, sized and pointed by the same
    variables an operator sets; its log goes to `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path, *, workers: int | None = None, threads: int | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "IOTHUB_PORT": str(self.port)}
        if workers:
            self.env["IOTHUB_WORKERS"] = str(workers)
        if threads:
            self.env["IOTHUB_THREADS"] = str(threads)
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "Gunicorn":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(f"{self.url}/api/v1/health/", timeout=2)
                return self  # any answer: it serves (the health of the database is another matter)
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not start:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        terminate(self.process)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass(frozen=True)
class Device:
    id: str
    serial_number: str
    token: str


class HubApi:
    """The hub's REST API as the administrator, for setting up what a test or a benchmark needs
    the way a user would."""

    def __init__(self, url: str, token: str):
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=30)

    def _created(self, path: str, body: dict) -> dict:
        response = self.client.post(path, json=body)
        if response.status_code != 201:
            raise RuntimeError(f"POST {path} answered {response.status_code}: {response.text}")
        return response.json()

    def device_type_create(self, name: str) -> str:
        body = {"name": name, "metric_name": "vibration", "metric_unit": "mm_s", "metric_min": 0, "metric_max": 25}
        return self._created("/api/v1/device-types/", body)["id"]

    def device_create(self, device_type: str, serial_number: str) -> Device:
        body = {"device_type": device_type, "name": serial_number, "serial_number": serial_number}
        created = self._created("/api/v1/devices/", body)
        return Device(created["id"], created["serial_number"], created["token"])

    def webhook_rule_create(self, device: Device, *webhook_urls: str, threshold: float = 15) -> None:
        """A rule `vibration > threshold` on the device, no cooldown, whose action posts a webhook
        to each URL."""
        template = self._created(
            "/api/v1/notification-templates/",
            {
                "name": f"Webhook for {device.serial_number}",
                "message_template": "{severity}: {device_name} {metric} {value}",
                "recipients": [{"type": "webhook", "url": url} for url in webhook_urls],
                "retry_delay_minutes": 0,
            },
        )
        self._created(
            "/api/v1/rules/",
            {
                "device": device.id,
                "name": "High vibration",
                "operator": "gt",
                "threshold": str(threshold),
                "cooldown_minutes": 0,
                "action_config": [{"type": "notification", "template_id": template["id"]}],
            },
        )

    def close(self) -> None:
        self.client.close()


def reading(device: Device, **metrics: float) -> dict:
    """One telemetry message of the device, in the spec's shape."""
    return {"version": "0.0.1", "serial_number": device.serial_number, "metrics": metrics}

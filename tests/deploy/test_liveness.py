"""`python -m iothub.liveness`, the checks compose's healthchecks run: `web` healthy on 200 from
/api/v1/health/ only (503 when the database is down), asked with a Host Django accepts; `worker`
by the age of its heartbeat (tests/worker/test_worker_metrics.py runs a worker beating it)."""

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def health_endpoint():
    """A stand-in for gunicorn on loopback that answers /api/v1/health/ with `status`."""
    state = {"status": 200, "hosts": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state["hosts"].append(self.headers["Host"])
            body = b'{"status": "ok"}' if state["status"] == 200 else b'{"status": "error", "database": "unavailable"}'
            self.send_response(state["status"] if self.path == "/api/v1/health/" else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["port"] = server.server_address[1]
    yield state
    server.shutdown()
    server.server_close()


def check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "iothub.liveness", *args],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_web_is_healthy_when_the_health_endpoint_answers_200(health_endpoint):
    result = check("web", IOTHUB_PORT=str(health_endpoint["port"]), ALLOWED_HOSTS="hub.plant.example,localhost")

    assert result.returncode == 0, result.stdout
    assert health_endpoint["hosts"] == ["hub.plant.example"]


def test_web_is_unhealthy_when_the_database_is_down_and_the_endpoint_says_503(health_endpoint):
    health_endpoint["status"] = 503

    result = check("web", IOTHUB_PORT=str(health_endpoint["port"]), ALLOWED_HOSTS=".plant.example")

    assert result.returncode == 1
    assert result.stdout.startswith("web: 503") and "unavailable" in result.stdout
    assert health_endpoint["hosts"] == ["plant.example"]


def test_web_is_unhealthy_when_nothing_answers():
    result = check("web", IOTHUB_PORT="1")

    assert result.returncode == 1
    assert "no answer" in result.stdout


def test_worker_without_a_heartbeat_is_unhealthy(tmp_path):
    result = check("worker", IOTHUB_HEARTBEAT_DIR=str(tmp_path))

    assert result.returncode == 1
    assert "no heartbeat" in result.stdout

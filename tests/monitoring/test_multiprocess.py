"""/metrics under gunicorn with two worker processes (prometheus_client's multiprocess mode):
whichever worker answers the scrape, it reports the readings of both."""

import glob
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.test_run_script import server_url

ROOT = Path(__file__).resolve().parents[2]
ACCEPTED = "iothub_readings_accepted_total"


def free_port(start: int = 8400) -> int:
    for port in range(start, start + 500):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port from {start} on")


def accepted_in(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == ACCEPTED:
                return sample.value
    raise AssertionError(f"{ACCEPTED} missing from the scrape")


def accepted_per_process(folder: Path) -> dict[str, float]:
    """Each worker's own count, read from its file alone."""
    counts = {}
    for path in glob.glob(str(folder / "counter_*.db")):
        for metric in MultiProcessCollector.merge([path]):
            for sample in metric.samples:
                if sample.name == ACCEPTED and sample.value:
                    counts[Path(path).stem] = sample.value
    return counts


@pytest.fixture
def gunicorn(tmp_path, settings):
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": server_url(settings.DATABASES["default"]["NAME"]),
        "SECRET_KEY": "tests-only-key-not-a-secret",
        "IOTHUB_PORT": str(port),
        "IOTHUB_WORKERS": "2",
        "IOTHUB_THREADS": "1",
        "LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health/", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"gunicorn did not start: {process.stderr.read()[-2000:]}")
        time.sleep(0.2)
    yield url, metrics_dir
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


# Committed for real, so that the live server's threads see the rows.
@pytest.mark.django_db(transaction=True)
def test_every_worker_reports_the_readings_of_all_workers(gunicorn, device_with_token):
    url, metrics_dir = gunicorn
    body = {"version": "0.0.1", "serial_number": device_with_token.device.serial_number, "metrics": {"vibration": 3.0}}
    headers = {"Authorization": f"Bearer {device_with_token.token}", "Connection": "close"}

    # New connections until both workers have stored some (the kernel spreads them), bounded.
    sent = 0
    while sent < 300 and (sent < 20 or len(accepted_per_process(metrics_dir)) < 2):
        assert httpx.post(f"{url}/api/v1/telemetry/", json=body, headers=headers).status_code == 201
        sent += 1

    per_process = accepted_per_process(metrics_dir)
    assert len(per_process) == 2, f"one worker took all {sent} requests: {per_process}"
    assert sum(per_process.values()) == sent
    for _ in range(6):  # scrapes on new connections, answered by either worker
        assert accepted_in(httpx.get(f"{url}/metrics", headers={"Connection": "close"}).text) == sent

"""`manage.py run_worker` as a real subprocess against the test database, with its log read
line by line so a test can wait for what it says."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgresql://{auth}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


class WorkerProcess:
    def __init__(self, *, machine_api_url: str, **env: str):
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "iothub.settings",
            "SECRET_KEY": "worker-tests-key",
            "DATABASE_URL": test_database_url(),
            "IOTHUB_MACHINE_API_URL": machine_api_url,
            "IOTHUB_MACHINE_API_TIMEOUT_SECONDS": "5",
            "IOTHUB_MACHINE_API_RETRY_DELAY_SECONDS": "1",
            "LOG_LEVEL": "INFO",
            **env,
        }
        self.lines: list[str] = []
        self._eof = False
        self._changed = threading.Condition()
        self.process: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for("worker started")
        return self

    def _read(self) -> None:
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 15) -> str:
        """The first log line containing `text`, once the worker has written it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    raise AssertionError(f"the worker never logged {text!r}; its log:\n" + "\n".join(self.lines))
                self._changed.wait(timeout=remaining)

    def count(self, text: str) -> int:
        with self._changed:
            return sum(text in line for line in self.lines)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 15) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return "\n".join(self.lines)

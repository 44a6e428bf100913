"""Health checks for the hub's processes, as compose's healthchecks run them (standard library only:
no Django start-up, no database connection of their own):

    python -m iothub.liveness web                      # the web tier
    python -m iothub.liveness worker [--max-age 120]   # a process that answers no HTTP
    python -m iothub.liveness ingest [--max-age 120]   # the MQTT ingest consumer, likewise

`web` asks the local gunicorn for `/api/v1/health/` and exits 0 on 200 only: 503 (the database
does not answer), any other status, or no answer exits 1. The request's Host is the first of
ALLOWED_HOSTS, so that Django answers it whatever the deployment's host names are.

A process that answers no HTTP (the worker; the ingest consumer while it is connected to the
broker) beats a heartbeat file while healthy; `worker` or `ingest` exits 0 when that heartbeat is
younger than `--max-age` seconds, 1 (saying why) when it is older or missing.

The file is `iothub-<name>.heartbeat` in IOTHUB_HEARTBEAT_DIR (default: the system's temporary
folder). In a container it is that container's own; processes of one name sharing a folder on one
host share the file, and the freshest of them answers.
"""

import argparse
import logging
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MAX_AGE = 120.0


def heartbeat_path(name: str) -> Path:
    folder = os.environ.get("IOTHUB_HEARTBEAT_DIR") or tempfile.gettempdir()
    return Path(folder) / f"iothub-{name}.heartbeat"


def heartbeat_beat(name: str) -> None:
    """Mark `name` alive now. A folder that cannot be written is logged, never fatal: liveness
    must not be what stops a process."""
    path = heartbeat_path(name)
    try:
        path.touch()
        os.utime(path)
    except OSError as exc:
        logger.warning("cannot write the heartbeat %s: %s", path, exc)


def heartbeat_age(name: str) -> float | None:
    """Seconds since `name` last beat; None when it never did."""
    try:
        return time.time() - heartbeat_path(name).stat().st_mtime
    except FileNotFoundError:
        return None


def web_health(*, port: int | None = None, timeout: float = 5.0) -> tuple[bool, str]:
    """Whether the local web tier answers 200 at `/api/v1/health/`, and what it said."""
    port = port or int(os.environ.get("IOTHUB_PORT") or 8000)
    hosts = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "localhost").split(",")]
    # `.example.com` allows example.com too; `*` allows any name.
    host = next((h.lstrip(".") for h in hosts if h and h != "*"), "localhost")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/health/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - a loopback URL
            return response.status == 200, f"{response.status} {response.read(200).decode(errors='replace')}"
    except urllib.error.HTTPError as error:
        return False, f"{error.code} {error.read(200).decode(errors='replace')}"
    except OSError as error:
        return False, f"no answer: {error}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iothub.liveness", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="web, or a process that beats a heartbeat: worker, ingest")
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE, help="seconds (default 120)")
    args = parser.parse_args(argv)
    if args.name == "web":
        healthy, said = web_health()
        print(f"web: {said}")
        return 0 if healthy else 1
    age = heartbeat_age(args.name)
    if age is None:
        print(f"{args.name}: no heartbeat at {heartbeat_path(args.name)}")
        return 1
    if age > args.max_age:
        print(f"{args.name}: last heartbeat {age:.0f} s ago (more than {args.max_age:.0f} s)")
        return 1
    print(f"{args.name}: alive, last heartbeat {age:.0f} s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())

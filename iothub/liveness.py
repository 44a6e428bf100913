"""Liveness of the hub's processes that answer no HTTP (the worker; the ingest consumer when it
comes): while healthy, a process beats a heartbeat file, and

    python -m iothub.liveness worker [--max-age 120]

exits 0 when the worker's heartbeat is younger than `--max-age` seconds, 1 (saying why) when it is
older or missing. Compose's healthcheck runs it. It reads only the file's modification time, with
the standard library: no Django start-up, no database.

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iothub.liveness", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the process: worker")
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE, help="seconds (default 120)")
    args = parser.parse_args(argv)
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

"""Gunicorn's settings for the hub, from the environment; `./scripts/run` and the Docker image use it.

https://docs.gunicorn.org/en/stable/settings.html

Sizing: one worker process per core (the GIL lets one process use one core), each with a few
threads so that requests waiting on PostgreSQL overlap. Django's connection pool is per process and
each thread holds its own connection while it serves a request, so keep DB_POOL_MAX_SIZE at least
IOTHUB_THREADS.
"""

import os


def _cores() -> int:
    if hasattr(os, "process_cpu_count"):  # Python 3.13: the cores this process may run on
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, not {raw!r}") from None
    if value < 1:
        raise SystemExit(f"{name} must be at least 1, not {value}")
    return value


_host = os.environ.get("IOTHUB_BIND") or "127.0.0.1"
_port = _int("IOTHUB_PORT", 8000)

wsgi_app = "iothub.wsgi:application"
bind = [f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"]
worker_class = "gthread"
workers = _int("IOTHUB_WORKERS", _cores())
threads = _int("IOTHUB_THREADS", 4)
# A request that takes longer than this is stuck, not slow: the worker is restarted.
timeout = 60
graceful_timeout = 20
# The control socket (gunicornc) is not used, and one default path per user would be fought over by
# two hubs on one machine.
control_socket_disable = True
accesslog = "-"
errorlog = "-"

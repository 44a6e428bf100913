"""Gunicorn's settings for the hub, from the environment; `./scripts/run` and the Docker image use it.

https://docs.gunicorn.org/en/stable/settings.html

Gunicorn manages the processes; each runs uvicorn (an event loop) serving `iothub.asgi`: the lean
ingest door for `POST /api/v1/telemetry/`, Django for everything else (docs/deployment.md).

Sizing: one worker process per core (the GIL lets one process use one core). In each, the event
loop reads requests and answers ingest, one writer thread stores readings in batches, and
IOTHUB_THREADS threads run Django's requests. Django's connection pool is per process: keep
DB_POOL_MAX_SIZE at least IOTHUB_THREADS + 1 (the writer holds one connection while it writes).
"""

import os
import shutil
import tempfile


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

wsgi_app = "iothub.asgi:application"
bind = [f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"]
worker_class = "iothub.server.HubWorker"
# One process per core: measured best for ingest on two cores (docs/performance.md).
workers = _int("IOTHUB_WORKERS", _cores())
# A worker whose event loop stops answering for this long is stuck: it is restarted.
timeout = 60
graceful_timeout = 20
# The control socket (gunicornc) is not used, and one default path per user would be fought over by
# two hubs on one machine.
control_socket_disable = True
# The hub writes one line per request itself, with ids (iothub/monitoring/middleware.py), so
# gunicorn's access log would only say it twice.
accesslog = None
errorlog = "-"

# Prometheus multiprocess mode (https://prometheus.github.io/client_python/multiprocess/): each
# worker process writes its counters to files in PROMETHEUS_MULTIPROC_DIR and /metrics adds them
# up, so a scrape sees every worker's counts, not just those of the worker that answered it. Set
# here, before any worker is forked, so that every worker inherits it. Unset: a fresh folder for
# this run, removed at exit. Set (./scripts/run shares var/metrics with the worker): whoever starts
# the processes empties it first.
_metrics_dir_owned = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _metrics_dir_owned = tempfile.mkdtemp(prefix="iothub-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir_owned


def child_exit(server, worker):
    # A worker that exits (restarted after a timeout, say) leaves its counters to be summed, but
    # its live gauges must go.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _metrics_dir_owned:
        shutil.rmtree(_metrics_dir_owned, ignore_errors=True)

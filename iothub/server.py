"""The hub's gunicorn worker class: uvicorn's, serving the ASGI app of `iothub.asgi`.

A module of its own, without Django, because gunicorn's master imports the worker class before it
forks the workers.
"""

from uvicorn_worker import UvicornWorker


class HubWorker(UvicornWorker):
    # uvloop and httptools where installed; the app's lifespan stops the ingest writer; no access
    # log (the hub writes one line per request itself, with ids); the client's address is the TCP
    # peer's, as gunicorn gives it (a proxy's X-Forwarded-For is not taken on trust: /metrics
    # admits clients by address).
    CONFIG_KWARGS = {"loop": "auto", "http": "auto", "lifespan": "on", "access_log": False, "proxy_headers": False}

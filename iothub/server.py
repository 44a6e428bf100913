"""The hub's gunicorn worker class: uvicorn's, serving the ASGI app of `iothub.asgi`.

A module of its own, without Django, because gunicorn's master imports the worker class before it
forks the workers.
"""

from uvicorn_worker import UvicornWorker


class HubWorker(UvicornWorker):
    # uvloop and httptools where installed; the app's lifespan starts and stops the ingest writer;
    # no access log (the hub writes one line per request itself, with ids).
    CONFIG_KWARGS = {"loop": "auto", "http": "auto", "lifespan": "on", "access_log": False}

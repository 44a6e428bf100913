"""A stand-in for `manage.py run_worker` running only the delivery job, for the tests and the
benchmark until the worker lands: LISTEN, run_once while it does something, else sleep until
next_due or a NOTIFY; SIGTERM stops claiming and lets the sends in flight finish.

    DATABASE_URL=... python tests/notifications/delivery_worker.py
"""

import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iothub.settings")


def main() -> None:
    import django

    django.setup()
    import psycopg
    from django.conf import settings
    from django.utils import timezone

    from iothub.notifications.delivery import DeliveryJob

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    job = DeliveryJob()
    listener = psycopg.connect(settings.DATABASE_URL, autocommit=True)
    listener.execute(f"LISTEN {job.channel}")
    print("ready", flush=True)
    while not stopping.is_set():
        if job.run_once():
            continue
        due = job.next_due()
        timeout = 1.0 if due is None else min(max((due - timezone.now()).total_seconds(), 0.0), 1.0)
        for _ in listener.notifies(timeout=timeout, stop_after=1):
            pass
    job.close()


if __name__ == "__main__":
    main()

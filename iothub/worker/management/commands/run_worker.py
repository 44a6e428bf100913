"""`python manage.py run_worker`: the hub's worker process (see `iothub/worker/loop.py`).

Run one or more, on any hosts; they share the work through PostgreSQL. SIGTERM or SIGINT lets the
batches in flight finish and be recorded, then exits 0.
"""

import logging
import signal

from django.core.management.base import BaseCommand

from iothub.worker.jobs import periodic_jobs, worker_outboxes
from iothub.worker.loop import Worker

logger = logging.getLogger("iothub.worker")


class Command(BaseCommand):
    help = (
        "Run the worker: notification deliveries, stop_machine calls, periodic device inactivity and "
        "telemetry retention."
    )

    def handle(self, *args, **options):
        worker = Worker(outboxes=worker_outboxes(), periodic=periodic_jobs())

        def on_signal(signum, _frame):
            logger.info("%s received: finishing the work in flight, then exiting", signal.Signals(signum).name)
            worker.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        worker.run()

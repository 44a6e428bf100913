"""`python manage.py run_ingest`: the MQTT ingest consumer (iothub/ingest/mqtt_consumer.py).

Run one or more, on one host or several: they share the devices' messages through the broker's
shared subscription, each with its own client id (IOTHUB_MQTT_CLIENT_ID or --client-id, stable from
one start to the next: the broker keeps the consumer's session, and what it holds for it, under
that id). Where IOTHUB_MQTT_BROKER_DIR is set it also keeps the broker's password file current: at
start and every IOTHUB_MQTT_RESYNC_SECONDS. SIGTERM or SIGINT lets the messages in the writer be
stored and acknowledged, then exits 0.

`--ready-file PATH`: the file exists while the consumer is subscribed (for `./scripts/run`). While
it is connected to the broker the consumer beats the heartbeat `ingest` every HEARTBEAT_SECONDS,
which `python -m iothub.liveness ingest` checks (compose's healthcheck).

`--retire`: retire this client id for good: unsubscribe from the shared
subscription (the broker stops giving this session new messages), store what the session still
holds, end the session, exit.
"""

import logging
import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from iothub.devices.broker import broker_credentials_sync
from iothub.ingest.mqtt_consumer import MqttConsumer, default_client_id
from iothub.ingest.writer import ingest_writer
from iothub.liveness import heartbeat_beat

logger = logging.getLogger("iothub.ingest.mqtt_consumer")
HEARTBEAT_SECONDS = 5.0


class Command(BaseCommand):
    help = "Run the MQTT ingest consumer: devices' messages from the broker, stored through the batched writer."

    def add_arguments(self, parser):
        parser.add_argument("--client-id", default="", help="MQTT client id (default: IOTHUB_MQTT_CLIENT_ID).")
        parser.add_argument("--ready-file", default="", help="A file that exists while the consumer is subscribed.")
        parser.add_argument(
            "--retire",
            action="store_true",
            help="Unsubscribe this client id, store what its session holds, end the session and exit.",
        )

    def handle(self, *args, **options):
        if not settings.IOTHUB_MQTT_PASSWORD:
            raise CommandError("set IOTHUB_MQTT_PASSWORD: the consumer's broker account needs a password")
        stop = threading.Event()

        def on_signal(signum, _frame):
            logger.info("%s received: storing the messages in flight, then exiting", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

        self._resync()
        writer = ingest_writer()
        consumer = MqttConsumer(
            writer=writer,
            client_id=options["client_id"] or default_client_id(),
            host=settings.IOTHUB_MQTT_HOST,
            port=settings.IOTHUB_MQTT_PORT,
            username=settings.IOTHUB_MQTT_USERNAME,
            password=settings.IOTHUB_MQTT_PASSWORD,
            share_group=settings.IOTHUB_MQTT_SHARE_GROUP,
            receive_maximum=settings.IOTHUB_MQTT_RECEIVE_MAXIMUM,
            ca_file=settings.IOTHUB_MQTT_CA_FILE,
            retire=options["retire"],
        )
        ready = Path(options["ready_file"]) if options["ready_file"] else None
        if ready is not None:
            ready.unlink(missing_ok=True)
        logger.info("mqtt: consumer %s starting, broker %s:%d", consumer.client_id, consumer.host, consumer.port)
        consumer.start()
        try:
            if options["retire"]:
                self._drain(consumer, stop)
            else:
                self._serve(consumer, stop, ready)
        finally:
            if ready is not None:
                ready.unlink(missing_ok=True)
            consumer.stop()
            writer.stop()
        logger.info("mqtt: consumer %s stopped", consumer.client_id)

    def _serve(self, consumer: MqttConsumer, stop: threading.Event, ready: Path | None) -> None:
        resync_due = settings.IOTHUB_MQTT_RESYNC_SECONDS
        waited = 0.0
        beaten = 0.0
        while not stop.wait(0.5):
            beaten -= 0.5
            if consumer.connected.is_set() and beaten <= 0:
                heartbeat_beat("ingest")
                beaten = HEARTBEAT_SECONDS
            if ready is not None and consumer.connected.is_set() != ready.exists():
                if consumer.connected.is_set():
                    ready.touch()
                else:
                    ready.unlink(missing_ok=True)
            waited += 0.5
            if waited >= resync_due:
                waited = 0.0
                self._resync()

    @staticmethod
    def _drain(consumer: MqttConsumer, stop: threading.Event) -> None:
        """Until the session has given what it held: nothing for a few seconds once unsubscribed."""
        while not consumer.connected.wait(0.5):
            if stop.is_set():
                return
        while not stop.wait(0.5) and not consumer.idle(3.0):
            pass

    @staticmethod
    def _resync() -> None:
        """The broker's password file from the devices table: repairs a change whose process died
        before writing it, or that was made where the broker's folder is out of reach."""
        if not settings.IOTHUB_MQTT_BROKER_DIR:
            return
        try:
            if broker_credentials_sync():
                logger.info("mqtt: the broker's password file was out of date: rewritten")
        except Exception:
            logger.exception("mqtt: the broker's password file could not be written")
        finally:
            connection.close()

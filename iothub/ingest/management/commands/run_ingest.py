"""`python manage.py run_ingest`: the MQTT ingest consumer (iothub/ingest/mqtt_consumer.py).

Run one or more, on one host or several: they share the devices' messages through the broker's
shared subscription, each with its own client id (IOTHUB_MQTT_CLIENT_ID or --client-id, stable from
one start to the next: the broker keeps the consumer's session, and what it holds for it, under
that id). Where IOTHUB_MQTT_BROKER_DIR is set it also keeps the broker's password file current: at
start and every IOTHUB_MQTT_RESYNC_SECONDS. SIGTERM or SIGINT lets the messages in the writer be
stored and acknowledged, then exits 0.
"""

import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from iothub.devices.broker import broker_credentials_sync
from iothub.ingest.mqtt_consumer import MqttConsumer, default_client_id
from iothub.ingest.writer import ingest_writer

logger = logging.getLogger("iothub.ingest.mqtt_consumer")


class Command(BaseCommand):
    help = "Run the MQTT ingest consumer: devices' messages from the broker, stored through the batched writer."

    def add_arguments(self, parser):
        parser.add_argument("--client-id", default="", help="MQTT client id (default: IOTHUB_MQTT_CLIENT_ID).")

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
        )
        logger.info("mqtt: consumer %s starting, broker %s:%d", consumer.client_id, consumer.host, consumer.port)
        consumer.start()
        while not stop.wait(settings.IOTHUB_MQTT_RESYNC_SECONDS):
            self._resync()
        consumer.stop()
        writer.stop()
        logger.info("mqtt: consumer %s stopped", consumer.client_id)

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

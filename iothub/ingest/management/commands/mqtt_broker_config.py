"""`python manage.py mqtt_broker_config [--dir DIR]`: write the hub's Mosquitto configuration.

Writes `mosquitto.conf`, `acl` and `passwords` into the folder (default IOTHUB_MQTT_BROKER_DIR) from
the settings and the devices table, and prints the command that runs the broker. Safe to run again:
the password file is rewritten only when it changed (iothub/ingest/mqtt_broker.py, docs/mqtt.md).
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from iothub.ingest.mqtt_broker import broker_files_write


class Command(BaseCommand):
    help = "Write the hub's Mosquitto configuration, ACL and password files, and print how to run the broker."

    def add_arguments(self, parser):
        parser.add_argument("--dir", default="", help="The folder (default: IOTHUB_MQTT_BROKER_DIR).")

    def handle(self, *args, **options):
        folder = options["dir"] or settings.IOTHUB_MQTT_BROKER_DIR
        if not folder:
            raise CommandError("give --dir or set IOTHUB_MQTT_BROKER_DIR")
        if not settings.IOTHUB_MQTT_PASSWORD:
            raise CommandError("set IOTHUB_MQTT_PASSWORD: the consumer's broker account needs a password")
        files = broker_files_write(folder)
        tls = f", TLS on {settings.IOTHUB_MQTT_TLS_PORT}" if files.tls else ", no TLS listener (no certificate given)"
        self.stdout.write(
            f"Wrote {files.config}, {files.acl} and the password file (plain MQTT on "
            f"{settings.IOTHUB_MQTT_BROKER_BIND or '*'}:{settings.IOTHUB_MQTT_PORT}{tls}).\n"
            f"Run the broker with: mosquitto -c {files.config}"
        )

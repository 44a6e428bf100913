"""`python manage.py demo_access`: what a person needs to start using a fresh hub.

Makes sure the administrator login exists with an API token, gives the demo device a new token
(it is stored hashed, so showing it means issuing a new one), and prints the hub's addresses, the
login, both tokens and a ready-to-paste curl line. `./scripts/run` prints this block once the hub
answers.
"""

import os
import shlex
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError

from iothub.accounts.services import admin_login_ensure
from iothub.devices.demo import DEMO_DEVICE, demo_device_get
from iothub.devices.services import device_rotate_token

ADMIN_PASSWORD_ENV = "IOTHUB_ADMIN_PASSWORD"  # noqa: S105 - the variable's name, not a secret


class Command(BaseCommand):
    help = (
        "Ensure the superuser login (password generated on creation, or taken from "
        f"{ADMIN_PASSWORD_ENV}) and its API token, issue a new token for the demo device, and print "
        "the URLs, the login, the tokens and a curl line."
    )

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="Where the hub is served.")
        parser.add_argument("--username", default="admin", help="The superuser's name (default: admin).")
        parser.add_argument(
            "--reset-admin-password",
            action="store_true",
            help=f"Set a new password ({ADMIN_PASSWORD_ENV} or a generated one) even if the user exists.",
        )
        parser.add_argument("--mqtt", default="", help="The MQTT broker's address, mqtt://host:port.")
        parser.add_argument("--mqtt-tls", default="", help="Its TLS listener, mqtts://host:port.")
        parser.add_argument("--mqtt-ca", default="", help="The CA certificate that signed the TLS listener's.")
        parser.add_argument(
            "--keep-device-token",
            action="store_true",
            help="Leave the demo device's token as it is (it is then not shown).",
        )

    def handle(self, *args, **options):
        base = options["base_url"].rstrip("/")
        login = admin_login_ensure(
            username=options["username"],
            password=os.environ.get(ADMIN_PASSWORD_ENV) or None,
            reset_password=options["reset_admin_password"],
        )
        device = demo_device_get()
        if device is None:
            raise CommandError(f"the demo device {DEMO_DEVICE['serial_number']} is missing: run load_demo first")

        if login.password is None:
            login_text = "password unchanged (--reset-admin-password sets a new one)"
        elif os.environ.get(ADMIN_PASSWORD_ENV):
            login_text = f"password from {ADMIN_PASSWORD_ENV}"
        else:
            login_text = f"password {login.password}  (new: note it, it is shown only now)"
        if options["keep_device_token"]:
            device_text = "token unchanged (it is stored hashed, so it cannot be shown)"
        else:
            token = device_rotate_token(device=device).token
            device_text = f"token {token}  (new this run; the previous one no longer works)"
        mqtt = self._mqtt_lines(options, device.serial_number, None if options["keep_device_token"] else token)

        lines = [
            f"IoT Hub Alpha is serving at {base}/",
            f"  API        {base}/api/v1/",
            f"  API docs   {base}/api/docs/",
            f"  Admin      {base}/admin/",
            f"  Login      {login.user.username}, {login_text}",
            f"  API token  {login.api_token}  (user {login.user.username})",
            f'  Device     {device.serial_number} "{device.name}", {device_text}',
            *mqtt[:1],
            "",
            "List the devices:",
            f'  curl -H "Authorization: Token {login.api_token}" {base}/api/v1/devices/',
            *mqtt[1:],
        ]
        self.stdout.write("\n".join(lines))

    @staticmethod
    def _mqtt_lines(options, serial_number: str, token: str | None) -> list[str]:
        """The broker's address line, then a mosquitto_pub line publishing as the demo device."""
        if not options["mqtt"]:
            return []
        address = f"  MQTT       {options['mqtt']}"
        if options["mqtt_tls"]:
            address += f"  (TLS {options['mqtt_tls']}, CA {options['mqtt_ca']})"
        broker = urlsplit(options["mqtt"])
        body = f'{{"version": "0.0.1", "serial_number": "{serial_number}", "metrics": {{"vibration": 16.2}}}}'
        command = [
            "mosquitto_pub", "-h", broker.hostname, "-p", str(broker.port), "-V", "mqttv5", "-q", "1",
            "-u", serial_number, "-P", token or "<device token>", "-t", f"devices/{serial_number}/telemetry",
            "-m", body,
        ]  # fmt: skip
        return [address, "", "Publish a reading as the device over MQTT:", "  " + shlex.join(command)]

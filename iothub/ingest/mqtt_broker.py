"""The hub's own Mosquitto configuration: the files `manage.py mqtt_broker_config` writes into
IOTHUB_MQTT_BROKER_DIR, for `mosquitto -c <folder>/mosquitto.conf` (docs/mqtt.md).

- `mosquitto.conf`: no anonymous access; the password and ACL files below; persistence, so that
  the consumers' sessions and what they hold survive a restart of the broker; no cap on a session's
  queue (Mosquitto's default of 1,000 would drop the readings of a consumer away for longer); a
  plain listener (loopback by default) and, given a certificate and key, a TLS one (8883).
- `acl`: the consumers' account reads every device's telemetry and writes every errors topic;
  every other account is a device (username = serial number) and may publish only to
  `devices/<its serial>/telemetry` and receive only from `devices/<its serial>/errors`.
- `passwords`: written from the devices table (iothub/devices/broker.py).

Everything comes from the settings, so the same command configures the broker of `./scripts/run`,
of docker-compose.yml and of the tests.
"""

import getpass
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from iothub.devices.broker import broker_credentials_sync

CONFIG_FILE = "mosquitto.conf"
ACL_FILE = "acl"

_HEADER = "# Written by IoT Hub Alpha (manage.py mqtt_broker_config) from its settings: change those, not this file."


@dataclass(frozen=True)
class BrokerFiles:
    config: Path
    acl: Path
    tls: bool  # whether the TLS listener is configured


def telemetry_topic(serial_number: str) -> str:
    return f"devices/{serial_number}/telemetry"


def errors_topic(serial_number: str) -> str:
    return f"devices/{serial_number}/errors"


def broker_acl() -> str:
    return "\n".join(
        [
            _HEADER,
            "# The consumers' account: every device's telemetry (through the shared subscription), every errors topic.",
            f"user {settings.IOTHUB_MQTT_USERNAME}",
            f"topic read {telemetry_topic('+')}",
            f"topic write {errors_topic('+')}",
            "",
            "# Every other account is a device, whose username is its serial number: its own two topics only.",
            f"pattern write {telemetry_topic('%u')}",
            f"pattern read {errors_topic('%u')}",
            "",
        ]
    )


def broker_config(folder: Path) -> tuple[str, bool]:
    """mosquitto.conf for a broker whose files are in `folder`; and whether it has a TLS listener."""
    data = Path(settings.IOTHUB_MQTT_BROKER_DATA_DIR or folder / "data")
    lines = [
        _HEADER,
        # Started as root (a container, CI), Mosquitto switches to this user, which must be able to
        # write its data folder and pid file.
        f"user {settings.IOTHUB_MQTT_BROKER_USER or getpass.getuser()}",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {folder / 'passwords'}",
        f"acl_file {folder / ACL_FILE}",
        "",
        "# Sessions and the messages queued for them survive a restart: saved every",
        "# autosave_interval seconds and at shutdown.",
        "persistence true",
        f"persistence_location {data}/",
        f"autosave_interval {settings.IOTHUB_MQTT_BROKER_AUTOSAVE_SECONDS}",
        "# A consumer's session holds its share of the readings while it is away: never drop them.",
        "max_queued_messages 0",
        "set_tcp_nodelay true",
        "",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if settings.IOTHUB_MQTT_BROKER_PID_FILE:
        lines.append(f"pid_file {settings.IOTHUB_MQTT_BROKER_PID_FILE}")
    lines += ["", f"listener {settings.IOTHUB_MQTT_PORT} {settings.IOTHUB_MQTT_BROKER_BIND}".rstrip()]
    tls = bool(settings.IOTHUB_MQTT_TLS_CERTFILE and settings.IOTHUB_MQTT_TLS_KEYFILE)
    if tls:
        lines += [
            "",
            "# MQTT over TLS, for devices beyond this host.",
            f"listener {settings.IOTHUB_MQTT_TLS_PORT} {settings.IOTHUB_MQTT_TLS_BIND}".rstrip(),
            f"certfile {settings.IOTHUB_MQTT_TLS_CERTFILE}",
            f"keyfile {settings.IOTHUB_MQTT_TLS_KEYFILE}",
            "tls_version tlsv1.2",
        ]
    return "\n".join(lines) + "\n", tls


def broker_files_write(folder: str | None = None) -> BrokerFiles:
    """Write the broker's configuration, ACL and password files into `folder` (default
    IOTHUB_MQTT_BROKER_DIR)."""
    folder = folder or settings.IOTHUB_MQTT_BROKER_DIR
    if not folder:
        raise ValueError("no folder for the broker's files: set IOTHUB_MQTT_BROKER_DIR")
    folder_path = Path(folder).resolve()
    config, tls = broker_config(folder_path)
    if not settings.IOTHUB_MQTT_BROKER_DATA_DIR:  # one given is the broker's own (another container's)
        (folder_path / "data").mkdir(parents=True, exist_ok=True)
    (folder_path / CONFIG_FILE).write_text(config)
    (folder_path / ACL_FILE).write_text(broker_acl())
    broker_credentials_sync(directory=str(folder_path))
    return BrokerFiles(config=folder_path / CONFIG_FILE, acl=folder_path / ACL_FILE, tls=tls)

"""The devices' credentials as the MQTT broker checks them: Mosquitto's password file.

A device connects to the broker with its serial number as username and its device token as
password (docs/mqtt.md). The hub keeps no token, only hashes, so it could never hand a token to
the broker afterwards: when a token is issued (device created, token rotated), its hash in the
format of Mosquitto's password file is kept beside `token_hash` (`devices.mqtt_password_hash`).
The password file is then a function of the devices table alone, and is written whole:

- by the process that changed a device's credential or serial number (created, rotated, revoked,
  updated, deleted), once its transaction has committed, when that process can reach the broker's
  folder (IOTHUB_MQTT_BROKER_DIR);
- by the MQTT consumer (`run_ingest`) when it starts and every IOTHUB_MQTT_RESYNC_SECONDS, which
  repairs a change whose process died between its commit and the file, or that was made where the
  folder is out of reach. A broker that was down meanwhile reads the file when it starts.

It is written only when its content changed, atomically (a temporary file renamed over it), under
a lock, so that two writers cannot put an older state over a newer one; then the broker is sent
SIGHUP. On SIGHUP Mosquitto reloads the file and checks every connected client's credentials again,
disconnecting those that no longer match: a rotated or revoked token stops working on an open
connection at once, not at its next CONNECT.

The hash is Mosquitto's `$6$` (SHA-512 of the token and a 12-byte random salt), not its slower
PBKDF2 `$7$`: tokens are 256-bit random strings, so a slow hash protects nothing more (the same
reason `token_hash` is a plain SHA-256), while Mosquitto computes one hash per connected client at
every reload.
"""

import base64
import fcntl
import hashlib
import logging
import os
import secrets
import signal
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import transaction

from iothub.devices.models import Device

logger = logging.getLogger(__name__)

PASSWORD_FILE = "passwords"  # noqa: S105 - a file name
_LOCK_FILE = ".passwords.lock"
_SALT_BYTES = 12  # what Mosquitto's password file requires
# A serial number is a username (the password file's `name:hash` line, trimmed) and a topic level
# (`devices/<serial>/telemetry`, which the ACL's %u pattern fills in): these characters break one
# or the other, and Mosquitto refuses pattern ACLs to a username with + or #.
_FORBIDDEN = set(":+#/")


def mqtt_password_hash(token: str, *, salt: bytes | None = None) -> str:
    """The token as a line of Mosquitto's password file holds it: `$6$<salt>$<SHA-512(token + salt)>`,
    both base64."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.sha512(token.encode() + salt).digest()
    return f"$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def mqtt_username_problem(serial_number: str) -> str | None:
    """Why a serial number cannot be an MQTT username, or None when it can."""
    if serial_number != serial_number.strip():
        return "starts or ends with a space"
    if serial_number.startswith("#"):
        return "starts with #"
    bad = sorted(_FORBIDDEN.intersection(serial_number))
    if bad:
        return f"contains {' '.join(bad)}"
    if any(not character.isprintable() for character in serial_number):
        return "contains a control character"
    if serial_number == settings.IOTHUB_MQTT_USERNAME:
        return "is the MQTT consumer's own username"
    return None


def _service_account_line() -> str | None:
    """The consumer's account. Its salt is derived from its name, so that the file's content (and
    so the broker) changes only when its password does."""
    if not settings.IOTHUB_MQTT_PASSWORD:
        return None
    username = settings.IOTHUB_MQTT_USERNAME
    salt = hashlib.sha256(b"iothub mqtt service account " + username.encode()).digest()[:_SALT_BYTES]
    return f"{username}:{mqtt_password_hash(settings.IOTHUB_MQTT_PASSWORD, salt=salt)}"


def broker_password_file() -> tuple[str, list[str]]:
    """The password file's content for the devices as they are now, and the serial numbers left out
    because they cannot be MQTT usernames."""
    lines = ["# Written by IoT Hub Alpha from its devices table (iothub/devices/broker.py): do not edit."]
    service = _service_account_line()
    if service is not None:
        lines.append(service)
    left_out = []
    rows = (
        Device.objects.filter(mqtt_password_hash__isnull=False)
        .order_by("serial_number")
        .values_list("serial_number", "mqtt_password_hash")
    )
    for serial_number, password_hash in rows:
        if mqtt_username_problem(serial_number) is not None:
            left_out.append(serial_number)
            continue
        lines.append(f"{serial_number}:{password_hash}")
    return "\n".join(lines) + "\n", left_out


def broker_credentials_sync(*, directory: str | None = None, pid_file: str | None = None) -> bool:
    """Write the broker's password file from the devices table if its content changed, and make
    the broker reload it; returns whether it changed. Does nothing without a broker folder."""
    folder = directory if directory is not None else settings.IOTHUB_MQTT_BROKER_DIR
    if not folder:
        return False
    if not settings.IOTHUB_MQTT_PASSWORD:
        # Written without it, the file would lock the consumers out at the next reload.
        logger.error("mqtt: IOTHUB_MQTT_BROKER_DIR is set but IOTHUB_MQTT_PASSWORD is not: password file left alone")
        return False
    path = Path(folder) / PASSWORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / _LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Read under the lock: whoever takes it after this writer reads a state at least as new.
        content, left_out = broker_password_file()
        try:
            if path.read_text() == content:
                return False
        except FileNotFoundError:
            pass
        _write_atomically(path, content)
    for serial_number in left_out:
        problem = mqtt_username_problem(serial_number)
        logger.warning("mqtt: device %r has no MQTT access: its serial number %s", serial_number, problem)
    broker_reload(pid_file if pid_file is not None else settings.IOTHUB_MQTT_BROKER_PID_FILE)
    return True


def _write_atomically(path: Path, content: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".passwords-")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        # The broker may run as another user (its own container): the hashes of random tokens are
        # no secret worth hiding from it.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def broker_reload(pid_file: str) -> bool:
    """Send SIGHUP to the broker named by its pid file, if it runs; returns whether it was sent. A
    pid that is not a mosquitto process (a stale file) is left alone."""
    if not pid_file:
        return False
    try:
        pid = int(Path(pid_file).read_text().strip())
        command = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        logger.info("mqtt: no broker runs for %s; it reads the password file when it starts", pid_file)
        return False
    if command != "mosquitto":
        logger.warning("mqtt: %s names process %d, which is %r, not mosquitto: not signalled", pid_file, pid, command)
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return False
    return True


def broker_credentials_changed() -> None:
    """A device's credential or serial number changed in the current transaction: rewrite the
    broker's password file once it commits (at once outside a transaction)."""
    if settings.IOTHUB_MQTT_BROKER_DIR:
        transaction.on_commit(_sync_after_commit)


def _sync_after_commit() -> None:
    # The change is committed whatever happens here; the consumer's resync repairs a failure.
    try:
        broker_credentials_sync()
    except Exception:
        logger.exception("mqtt: the broker's password file could not be written; run_ingest retries")

"""The broker's password file follows the devices table: every change to a credential or serial
number rewrites it once the change commits; an unchanged file is left alone (no reload); a serial
number that cannot be an MQTT username is left out, and said so. The broker itself checking these
hashes is tests/ingest/test_mqtt.py's."""

import base64
import hashlib
import logging
import os

import pytest

from iothub.devices.broker import PASSWORD_FILE, broker_credentials_sync, broker_reload, mqtt_password_hash
from iothub.devices.services import (
    device_create,
    device_delete,
    device_revoke_token,
    device_rotate_token,
    device_update,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def folder(tmp_path, settings):
    settings.IOTHUB_MQTT_BROKER_DIR = str(tmp_path)
    settings.IOTHUB_MQTT_BROKER_PID_FILE = ""
    settings.IOTHUB_MQTT_PASSWORD = "consumer-secret"
    return tmp_path


def accounts(folder) -> dict[str, str]:
    lines = (folder / PASSWORD_FILE).read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if not line.startswith("#"))


def verifies(line_hash: str, token: str) -> bool:
    _, kind, salt, digest = line_hash.split("$")
    return kind == "6" and base64.b64decode(digest) == hashlib.sha512(token.encode() + base64.b64decode(salt)).digest()


def test_the_hash_is_mosquittos_salted_sha512_of_the_token():
    line_hash = mqtt_password_hash("iot_token")

    assert verifies(line_hash, "iot_token")
    assert not verifies(line_hash, "iot_other")
    assert len(base64.b64decode(line_hash.split("$")[2])) == 12
    assert mqtt_password_hash("iot_token") != line_hash  # a new salt each time


def test_a_device_created_rotated_revoked_renamed_and_deleted_is_followed(
    folder, vibration_type, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        created = device_create(device_type=vibration_type, name="Press", serial_number="P-1")
    assert verifies(accounts(folder)["P-1"], created.token)
    assert verifies(accounts(folder)["iothub-ingest"], "consumer-secret")

    with django_capture_on_commit_callbacks(execute=True):
        rotated = device_rotate_token(device=created.device)
    assert verifies(accounts(folder)["P-1"], rotated.token)
    assert not verifies(accounts(folder)["P-1"], created.token)

    with django_capture_on_commit_callbacks(execute=True):
        device_update(device=created.device, data={"serial_number": "P-2"})
    assert "P-1" not in accounts(folder) and verifies(accounts(folder)["P-2"], rotated.token)

    with django_capture_on_commit_callbacks(execute=True):
        device_revoke_token(device=created.device)
    assert "P-2" not in accounts(folder)

    with django_capture_on_commit_callbacks(execute=True):
        device_rotate_token(device=created.device)
    with django_capture_on_commit_callbacks(execute=True):
        device_delete(device=created.device)
    assert set(accounts(folder)) == {"iothub-ingest"}


def test_a_change_rolled_back_never_reaches_the_file(folder, device_with_token, django_capture_on_commit_callbacks):
    broker_credentials_sync()
    before = (folder / PASSWORD_FILE).read_text()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        device_rotate_token(device=device_with_token.device)

    assert callbacks  # written after the commit, not before it
    assert (folder / PASSWORD_FILE).read_text() == before


def test_an_unchanged_file_is_not_rewritten(folder, device_with_token):
    assert broker_credentials_sync() is True
    inode = os.stat(folder / PASSWORD_FILE).st_ino

    assert broker_credentials_sync() is False
    assert os.stat(folder / PASSWORD_FILE).st_ino == inode


def test_a_serial_number_that_cannot_be_a_username_is_left_out_and_said(folder, vibration_type, caplog):
    device_create(device_type=vibration_type, name="A", serial_number="LINE/7")
    device_create(device_type=vibration_type, name="B", serial_number="OK-7")

    with caplog.at_level(logging.WARNING):
        broker_credentials_sync()

    assert set(accounts(folder)) == {"iothub-ingest", "OK-7"}
    assert "device 'LINE/7' has no MQTT access: its serial number contains /" in caplog.text


def test_a_pid_file_naming_another_process_is_not_signalled(tmp_path):
    """A stale pid file may name any process by now: only a mosquitto is sent SIGHUP (this test's
    own process would die of it)."""
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(str(os.getpid()))

    assert broker_reload(str(pid_file)) is False

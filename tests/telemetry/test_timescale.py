"""`setup_timescaledb` and retention, against the real server's TimescaleDB (Apache licence here)."""

import os
import secrets
import subprocess
import sys
import urllib.parse
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from psycopg import sql

from iothub.telemetry import timescale
from iothub.telemetry.models import Telemetry
from iothub.telemetry.timescale import telemetry_apply_retention, timescale_state

ROOT = Path(__file__).resolve().parents[2]


def server_url(dbname: str) -> str:
    db = settings.DATABASES["default"]
    user = urllib.parse.quote(db["USER"] or "postgres", safe="")
    password = f":{urllib.parse.quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    return f"postgresql://{user}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{dbname}"


def manage(database_url: str, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def fresh_database():
    """A migrated database whose telemetry is still a plain table, with rows in it."""
    name = f"iothub_tsdb_{secrets.token_hex(4)}"
    with psycopg.connect(server_url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = server_url(name)
    try:
        manage(url, "migrate", "--verbosity", "0")
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO device_types (name, metric_name, metric_unit) VALUES ('vib', 'vibration', 'mm_s')"
            )
            conn.execute(
                "INSERT INTO devices (device_type_id, name, serial_number) SELECT id, 'd', 'SN-1' FROM device_types"
            )
            conn.execute(
                """INSERT INTO telemetry (device_id, "timestamp", payload)
                   SELECT d.id, now() - g * interval '1 day', '{"metrics": {"vibration": 1}}'
                   FROM devices d, generate_series(0, 29) g"""
            )
        yield url
    finally:
        with psycopg.connect(server_url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_setup_makes_a_hypertable_of_the_existing_rows_and_reports_the_same_state_twice(fresh_database):
    first = manage(fresh_database, "setup_timescaledb").splitlines()
    second = manage(fresh_database, "setup_timescaledb").splitlines()

    assert "hypertable on 'timestamp': created, chunks of 7 days" in first
    assert "hypertable on 'timestamp': present, chunks of 7 days" in second
    # Apart from what was done the first time, both runs report the same state.
    assert [line.replace("created", "present") for line in first] == second
    assert any(line.startswith("compression after 30 days: unavailable under the apache licence") for line in second)
    assert any("the worker drops older chunks itself with drop_chunks" in line for line in second)

    with psycopg.connect(fresh_database) as conn:
        interval = conn.execute(
            "SELECT time_interval FROM timescaledb_information.dimensions WHERE hypertable_name = 'telemetry'"
        ).fetchone()
        chunks = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry'"
        ).fetchone()
        rows = conn.execute("SELECT count(*) FROM telemetry").fetchone()
        rows_outside_chunks = conn.execute("SELECT count(*) FROM ONLY telemetry").fetchone()
    assert interval == (timedelta(days=7),)
    assert chunks[0] >= 4  # 30 days of rows, moved into 7-day chunks
    assert rows == (30,) and rows_outside_chunks == (0,)


@pytest.mark.django_db
def test_the_test_database_state_is_what_setup_reports():
    state = timescale_state()
    assert state.installed_version and state.hypertable and state.gin_index
    assert state.chunk_interval == timedelta(days=7)
    assert state.license == "apache" and not state.has_policies and state.retention_policy is None


def _insert_reading(device, days_ago: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            'INSERT INTO telemetry (device_id, "timestamp", payload) '
            "VALUES (%s, now() - %s * interval '1 day', '{}')",
            [device.id, days_ago],
        )
        # The test's one transaction still owes the deferred foreign-key checks of these rows, and
        # a chunk with pending checks cannot be dropped; the worker's retention runs on its own.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


@pytest.mark.django_db
def test_retention_drops_the_chunks_older_than_the_period_and_keeps_the_rest(device, settings):
    settings.IOTHUB_TELEMETRY_RETENTION_DAYS = 30
    for days_ago in (0, 5, 60, 90):
        _insert_reading(device, days_ago)

    dropped = telemetry_apply_retention()

    assert dropped >= 2  # the chunks of 60 and 90 days ago
    kept = sorted((timezone.now() - t).days for t in Telemetry.objects.values_list("timestamp", flat=True))
    assert kept == [0, 5]


@pytest.mark.django_db
def test_retention_on_plain_postgresql_deletes_the_old_rows(device, settings, monkeypatch):
    settings.IOTHUB_TELEMETRY_RETENTION_DAYS = 30
    monkeypatch.setattr(timescale, "timescale_enabled", lambda: False)  # the path without the extension
    for days_ago in (1, 31, 45):
        _insert_reading(device, days_ago)

    assert telemetry_apply_retention() == 2
    assert Telemetry.objects.count() == 1


CATALOG = ("pg_extension", "timescaledb_information")


def catalog_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if any(name in q["sql"] for name in CATALOG)]


@pytest.mark.django_db
def test_whether_timescaledb_is_on_is_asked_of_the_catalog_once_per_process():
    timescale.timescale_forget()
    with CaptureQueriesContext(connection) as first:
        assert timescale.timescale_enabled()
    with CaptureQueriesContext(connection) as later:
        assert timescale.timescale_enabled() and timescale.timescale_enabled()

    assert catalog_queries(first)
    assert catalog_queries(later) == []


@pytest.mark.django_db
def test_aggregate_calls_do_not_ask_the_catalog(viewer_client, device):
    url = f"/api/v1/devices/{device.id}/telemetry/aggregate/"
    assert viewer_client.get(url).status_code == 200
    with CaptureQueriesContext(connection) as later:
        for _ in range(3):
            assert viewer_client.get(url).status_code == 200

    assert catalog_queries(later) == []


@pytest.mark.django_db
def test_setup_makes_the_next_question_go_to_the_catalog_again():
    assert timescale.timescale_enabled()
    timescale.timescale_setup()
    with CaptureQueriesContext(connection) as queries:
        assert timescale.timescale_enabled()
    assert catalog_queries(queries)


@pytest.mark.django_db
def test_a_database_without_the_hypertable_is_asked_again_after_a_while(monkeypatch):
    asked = []
    monkeypatch.setattr(timescale, "_timescale_enabled_in_catalog", lambda: asked.append(1) or False)
    timescale.timescale_forget()
    try:
        assert not timescale.timescale_enabled() and not timescale.timescale_enabled()
        assert len(asked) == 1  # within the minute, the answer is kept
        monkeypatch.setattr(timescale, "_NOT_ENABLED_RECHECK", 0.0)  # the minute has passed
        assert not timescale.timescale_enabled()
        assert len(asked) == 2
    finally:
        timescale.timescale_forget()

"""`GET /api/v1/health/`: open to anonymous, 200 when the database answers, 503 naming it when not."""

import json
import os
import subprocess
import sys
from pathlib import Path

from django.db import connection
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parents[2]


def _timescaledb_installed() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
        return cursor.fetchone()[0] == 1


def test_health_is_ok_and_says_whether_timescaledb_is_there(anonymous_client, db):
    response = anonymous_client.get("/api/v1/health/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "timescaledb": _timescaledb_installed()}


def test_health_ignores_a_stale_credential(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token revoked-long-ago")

    assert client.get("/api/v1/health/").status_code == 200


def test_health_is_503_naming_the_database_when_it_does_not_answer():
    # A separate process, so that the hub really runs against a server that is not there.
    script = (
        "import django, json; django.setup()\n"
        "from django.test import Client\n"
        "r = Client(HTTP_HOST='localhost').get('/api/v1/health/')\n"
        "print(json.dumps({'status_code': r.status_code, 'body': r.json()}))\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere",
        "DB_POOL_TIMEOUT": "1",
    }

    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "status_code": 503,
        "body": {"status": "error", "database": "unavailable", "timescaledb": None},
    }

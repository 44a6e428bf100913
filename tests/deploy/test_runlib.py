"""scripts/runlib.py: the decisions `./scripts/run` takes about the database and the address."""

import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]


def runlib(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / "runlib.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def server_url(*, user: str | None = None, dbname: str) -> str:
    db = settings.DATABASES["default"]
    return f"postgresql://{user or db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{dbname}"


def test_db_prepare_creates_a_missing_database_once():
    name = "iothub_runlib_probe"
    try:
        first = runlib("db-prepare", server_url(dbname=name))
        second = runlib("db-prepare", server_url(dbname=name))
    finally:
        with psycopg.connect(server_url(dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    assert first.returncode == 0, first.stderr
    assert f"database {name} (created)" in first.stdout
    assert second.returncode == 0, second.stderr
    assert f"database {name} (exists)" in second.stdout


def test_db_prepare_reports_a_refusing_server_and_does_not_fall_back():
    result = runlib("db-prepare", server_url(user="no_such_role_for_the_hub", dbname="iothub"))

    assert result.returncode == 1  # 3 would start an embedded server instead of the one meant
    assert 'role "no_such_role_for_the_hub" does not exist' in result.stderr
    assert "fix DATABASE_URL" in result.stderr


def test_db_prepare_says_nothing_answers_where_no_server_listens():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # a port that is ours and not listening
        port = holder.getsockname()[1]
        result = runlib("db-prepare", f"postgresql://postgres@127.0.0.1:{port}/iothub")

    assert result.returncode == 3


def test_port_free_refuses_an_address_in_use():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        taken = runlib("port-free", "127.0.0.1", str(port))

    assert taken.returncode == 1
    assert "IOTHUB_PORT" in taken.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://hub:s3cret@db:5432/iothub", "postgresql://hub:***@db:5432/iothub"),
        ("postgresql://postgres@127.0.0.1:5432/iothub", "postgresql://postgres@127.0.0.1:5432/iothub"),
    ],
)
def test_display_url_hides_the_password(url, shown):
    assert runlib("display-url", url).stdout.strip() == shown

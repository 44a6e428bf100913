"""scripts/init-db.sh, as the PostgreSQL image's entrypoint runs it, against the test server."""

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_database():
    """A new database and a role name, as a first start of the db container has them; dropped after."""
    db = settings.DATABASES["default"]
    admin = psycopg.connect(
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        user=db["USER"],
        password=db["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    name = f"iothub_initdb_{secrets.token_hex(4)}"
    role = f"reporting_{secrets.token_hex(4)}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield db, name, role
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.close()


def run_init_db(db: dict, name: str, **extra: str) -> subprocess.CompletedProcess:
    if shutil.which("psql") is None:
        pytest.fail("psql is not installed (Debian: apt-get install postgresql-client); init-db.sh needs it")
    env = {
        **os.environ,
        "PGHOST": db["HOST"] or "",
        "PGPORT": str(db["PORT"] or 5432),
        "PGPASSWORD": db["PASSWORD"] or "",
        "POSTGRES_USER": db["USER"],
        "POSTGRES_DB": name,
        **extra,
    }
    return subprocess.run(
        [str(ROOT / "scripts" / "init-db.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_init_db_creates_the_extensions(fresh_database):
    db, name, _ = fresh_database

    result = run_init_db(db, name)

    assert result.returncode == 0, result.stderr
    with psycopg.connect(**_params(db, name)) as conn:
        extensions = {row[0] for row in conn.execute("SELECT extname FROM pg_extension")}
    assert "uuid-ossp" in extensions
    # TimescaleDB only where the server preloads it (the timescale image does).
    with psycopg.connect(**_params(db, name)) as conn:
        preloaded = "timescaledb" in conn.execute("SHOW shared_preload_libraries").fetchone()[0]
    assert ("timescaledb" in extensions) == preloaded


def test_init_db_creates_a_read_only_login_that_reads_later_tables_and_writes_none(fresh_database):
    db, name, role = fresh_database
    extra = {"DB_READONLY_USER": role, "DB_READONLY_PASSWORD": "it's a secret"}

    first = run_init_db(db, name, **extra)
    again = run_init_db(db, name, **extra)

    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    with psycopg.connect(**_params(db, name), autocommit=True) as conn:
        conn.execute("CREATE TABLE created_by_a_later_migration (x int)")
        can = conn.execute(
            "SELECT rolcanlogin, has_table_privilege(%(r)s, 'created_by_a_later_migration', 'SELECT'), "
            "has_table_privilege(%(r)s, 'created_by_a_later_migration', 'INSERT') "
            "FROM pg_roles WHERE rolname = %(r)s",
            {"r": role},
        ).fetchone()
    assert can == (True, True, False)


def test_init_db_without_a_read_only_password_creates_no_login(fresh_database):
    db, name, role = fresh_database

    result = run_init_db(db, name, DB_READONLY_USER=role)

    assert result.returncode == 0, result.stderr
    with psycopg.connect(**_params(db, name)) as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is None


def _params(db: dict, name: str) -> dict:
    return {
        "host": db["HOST"] or None,
        "port": db["PORT"] or None,
        "user": db["USER"],
        "password": db["PASSWORD"] or None,
        "dbname": name,
    }

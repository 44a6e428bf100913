"""`database_unavailable`: which real database errors mean "unreachable, retry later" (503) and which
are the work's own failure (an error as before). Every error here is raised by a real server or a
real failed connection, raw and as Django wraps it."""

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

from iothub.db import database_unavailable
from tests.pgcluster import free_port


def raised(action) -> BaseException:
    with pytest.raises(psycopg.Error) as caught:
        action()
    return caught.value


def django_wrapped(error: BaseException) -> BaseException:
    """The error as Django's database layer re-raises it (its own class, the original as cause)."""
    with pytest.raises(Exception) as caught, connection.wrap_database_errors:
        raise error
    assert caught.value is not error and caught.value.__cause__ is error
    return caught.value


def assert_unavailable(error: BaseException, expected: bool) -> None:
    assert database_unavailable(error) is expected, repr(error)
    assert database_unavailable(django_wrapped(error)) is expected, repr(error)


def test_a_refused_connection_is_unavailable():
    error = raised(lambda: psycopg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/x", connect_timeout=2))
    assert_unavailable(error, True)


def test_a_pool_that_gets_no_connection_in_time_is_unavailable():
    with ConnectionPool(f"postgresql://postgres@127.0.0.1:{free_port()}/x", min_size=0, max_size=1, open=True) as pool:
        error = raised(lambda: pool.getconn(timeout=0.5))
    assert type(error).__name__ == "PoolTimeout"
    assert_unavailable(error, True)


def test_a_connection_the_server_terminated_is_unavailable(private_cluster):
    with psycopg.connect(private_cluster.url(), autocommit=True) as conn:
        error = raised(lambda: conn.execute("SELECT pg_terminate_backend(pg_backend_pid())"))
    assert error.sqlstate == "57P01"  # admin_shutdown, as at a fast stop
    assert_unavailable(error, True)


def test_a_connection_lost_in_a_crash_is_unavailable(private_cluster):
    conn = psycopg.connect(private_cluster.url(), autocommit=True)
    try:
        private_cluster.stop("immediate")
        error = raised(lambda: conn.execute("SELECT 1"))
        assert_unavailable(error, True)
        # And the same connection used again: "the connection is closed".
        assert_unavailable(raised(lambda: conn.execute("SELECT 1")), True)
    finally:
        private_cluster.start()
        conn.close()


def test_a_statement_timeout_is_not_unavailable(private_cluster):
    with psycopg.connect(private_cluster.url(), autocommit=True) as conn:
        conn.execute("SET statement_timeout = 10")
        error = raised(lambda: conn.execute("SELECT pg_sleep(1)"))
    assert error.sqlstate == "57014"  # query_canceled: an OperationalError in psycopg, but the query's own
    assert_unavailable(error, False)


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        ("08006", True),  # connection_failure
        ("08001", True),  # sqlclient_unable_to_establish_sqlconnection
        ("57P01", True),  # admin_shutdown
        ("57P02", True),  # crash_shutdown
        ("57P03", True),  # cannot_connect_now: starting up, shutting down, in recovery
        ("53300", True),  # too_many_connections
        ("40P01", False),  # deadlock_detected: an OperationalError too, and retried by ingest itself
        ("40001", False),  # serialization_failure
        ("55P03", False),  # lock_not_available
        ("53100", False),  # disk_full: for the operator, not a wait
        ("23505", False),  # unique_violation
        ("22003", False),  # numeric_value_out_of_range
    ],
)
def test_server_errors_are_unavailable_by_their_sqlstate(private_cluster, sqlstate, expected):
    statement = f"DO $$ BEGIN RAISE EXCEPTION 'as raised by the server' USING ERRCODE = '{sqlstate}'; END $$"
    with psycopg.connect(private_cluster.url(), autocommit=True) as conn:
        error = raised(lambda: conn.execute(statement))
    assert error.sqlstate == sqlstate
    assert_unavailable(error, expected)


def test_errors_that_are_not_the_database_s_are_not_unavailable():
    assert database_unavailable(ValueError("not a database error")) is False
    assert database_unavailable(psycopg.ProgrammingError("a bug")) is False

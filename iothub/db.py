"""Database helpers the apps share: expressions for the spec's defaults, prepared execution of the
few statements every ingest request runs, which errors a fresh attempt can clear, and what the hub
answers over HTTP while the database is unreachable."""

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
import psycopg_pool
from django.db import DatabaseError, connection, models

# What a failed statement raises: Django's wrapper, or psycopg's own from `execute_prepared`.
DATABASE_ERRORS = (DatabaseError, psycopg.Error)


class Now(models.Func):
    """`now()`, the spec's `DEFAULT NOW()`: the transaction's start time.

    Django's own `Now()` compiles to `statement_timestamp()` on PostgreSQL, a different default.
    """

    template = "now()"
    output_field = models.DateTimeField()


class NextVal(models.Func):
    """`nextval('<sequence>')`: what BIGSERIAL puts in the column's default."""

    function = "nextval"
    output_field = models.BigIntegerField()

    def __init__(self, sequence: str, **extra):
        super().__init__(models.Value(sequence), **extra)


def execute_prepared(sql: str, params: dict | list) -> list[tuple]:
    """Run `sql` on Django's connection (inside its current transaction, if any) as a server-side
    prepared statement, and return its rows (none for a statement that returns none).

    Django binds parameters on the client and never prepares, which suits most queries; the
    statements every ingest request runs are worth more: preparing skips PostgreSQL's planning
    (about half the server's time for the ingest statement). The pool keeps connections, and each
    keeps its prepared statements, so the statement is planned once per connection, not per
    request.
    """
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchall() if cursor.description is not None else []


def model_columns(model: type[models.Model], fields: Sequence[str] | None = None) -> list[str]:
    """The column names of the model's fields (all, or those named), in field order: the SELECT
    list for `model_from_row`."""
    return list(_row_layout(model, None if fields is None else tuple(fields))[0])


def model_from_row(model: type[models.Model], values, fields: Sequence[str] | None = None) -> models.Model:
    """An instance from a raw row of `model_columns(model, fields)`, converted as the ORM would
    (JSON text to Python for JSON fields), which `Model.from_db` alone does not. Fields left out
    are deferred, as with `.only()`."""
    columns, converters = _row_layout(model, None if fields is None else tuple(fields))
    row = list(values)
    for index, convert in converters:
        row[index] = convert(row[index], None, connection)
    return model.from_db("default", columns, row)


@functools.cache
def _row_layout(model: type[models.Model], fields: tuple[str, ...] | None) -> tuple[tuple[str, ...], tuple]:
    """The columns of a row of `model`, and the converters for those that need one; worked out
    once per model and field list (ingest builds models from rows on every request)."""
    chosen = [f for f in model._meta.concrete_fields if fields is None or f.attname in fields]
    columns = tuple(f.attname for f in chosen)
    converters = tuple((i, f.from_db_value) for i, f in enumerate(chosen) if hasattr(f, "from_db_value"))
    return columns, converters


# What PostgreSQL aborts to break a cycle or a conflict, leaving nothing written: the work can
# simply run again. Deadlocks happen on the hypertable when concurrent inserts create the same new
# chunk (TimescaleDB locks the tables the chunk's foreign key points at), once per chunk interval.
RETRYABLE_ERRORS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def is_retryable(error: BaseException) -> bool:
    """Whether a database error, raw or as Django wraps it, is one a fresh attempt can clear."""
    return isinstance(error, RETRYABLE_ERRORS) or isinstance(error.__cause__, RETRYABLE_ERRORS)


# SQLSTATEs that say the server went away or cannot take the connection now, not that the statement
# was wrong: class 08 (connection exception), 57P01/57P02 (the server is shutting down, fast or after
# a crash), 57P03 (it is starting up, or recovering), 53300 (too many connections).
# https://www.postgresql.org/docs/15/errcodes-appendix.html
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def database_unavailable(error: BaseException) -> bool:
    """Whether a database error, raw or as Django wraps it, means that the database could not be
    reached (down, restarting, refusing connections, or the connection was lost), rather than that
    the work itself failed: the same request can succeed later, unchanged.

    The one classification for every door of the hub (the Django middleware, the ingest door): a
    yes is answered with `DATABASE_UNAVAILABLE` (503 and Retry-After), a no stays an error.
    """
    for candidate in (error, error.__cause__):
        if isinstance(candidate, (psycopg_pool.PoolTimeout, psycopg_pool.TooManyRequests)):
            return True  # no connection to be had in time: none could be opened
        if isinstance(candidate, psycopg.OperationalError):
            sqlstate = candidate.sqlstate
            # No SQLSTATE: raised on the client side, by libpq or psycopg, for a connection that
            # could not be opened or was lost ("connection refused", "server closed the connection
            # unexpectedly", "the connection is closed"). A statement's own failures (a deadlock,
            # a cancelled query) always carry one.
            if sqlstate is None or sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES:
                return True
    return False


# Seconds a client is asked to wait before retrying while the database is unreachable: a restart
# takes a few seconds, crash recovery or a failover a few more, and clients that retry sooner only
# add load to a hub that cannot serve them.
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class UnavailableReply:
    """An HTTP answer, independent of the web framework that sends it."""

    status: int
    headers: dict[str, str]
    body: bytes


DATABASE_UNAVAILABLE = UnavailableReply(
    status=503,
    headers={"Content-Type": "application/json", "Retry-After": str(RETRY_AFTER_SECONDS)},
    # The API's error shape (`{"detail": ...}`), so that clients need no second parser.
    body=json.dumps(
        {
            "detail": "The database is unreachable at the moment. "
            f"Retry the same request after {RETRY_AFTER_SECONDS} seconds (Retry-After)."
        }
    ).encode(),
)

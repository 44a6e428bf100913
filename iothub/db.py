"""Database helpers the apps share: expressions for the spec's defaults, and prepared execution
of the few statements every ingest request runs."""

import functools
from collections.abc import Sequence

import psycopg
from django.db import DatabaseError, InterfaceError, connection, models

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


# SQLSTATEs that say the server is going away or not there yet: admin_shutdown, crash_shutdown,
# cannot_connect_now; and class 08, connection exceptions.
_UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03"}


def database_unavailable(error: BaseException) -> bool:
    """Whether a database error, raw or as Django wraps it, means the database cannot be reached
    (down, restarting, the connection lost, no connection to be had from the pool), as opposed to
    a statement it refused. Such an error says nothing against the request: it can be tried again
    once the database is back."""
    cause = error if isinstance(error, psycopg.Error) else error.__cause__
    if not isinstance(cause, psycopg.Error):
        # Django's own wrapper without a psycopg cause: an InterfaceError on a closed connection.
        return isinstance(error, InterfaceError)
    if isinstance(cause, psycopg.InterfaceError):
        return True
    sqlstate = cause.sqlstate
    if sqlstate is None:
        # Raised by the client, not the server: connection refused or lost, pool timeout.
        return isinstance(cause, psycopg.OperationalError)
    return sqlstate in _UNAVAILABLE_SQLSTATES or sqlstate.startswith("08")

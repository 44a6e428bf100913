"""Making a race deterministic with a real row lock: the test's transaction holds a lock, another
connection's request runs into it, and the test waits until it does before going on."""

import time

from django.db import connection


def wait_until_a_transaction_waits_for_ours(timeout: float = 10) -> None:
    """Returns once another transaction waits for the one open on this thread's connection."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted "
                "AND transactionid = pg_current_xact_id()::xid"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("no other transaction came to wait for this one's locks")

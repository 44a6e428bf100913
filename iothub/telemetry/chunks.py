"""Device-ordered chunks: each closed chunk of the telemetry hypertable rewritten once in
`(device_id, timestamp)` order, so that a device's range reads a few pages rather than one page per
reading (readings from many devices arrive interleaved, and a heap keeps arrival order).

TimescaleDB does this with compression or `reorder_chunk`, both under the community licence only;
the Apache build (Debian's) refuses them. PostgreSQL's `CLUSTER` would do it, but holds an ACCESS
EXCLUSIVE lock on the chunk for the whole rewrite, blocking every read of its week. So the chunk is
rewritten in place, by plain statements that take no lock beyond what ingest takes:

1. one transaction deletes every row and inserts it again, sorted: the new versions go to new
   pages at the end of the heap, in device order (readers see the old versions until the commit,
   then the new ones; a late reading inserted meanwhile is not touched);
2. VACUUM frees the old pages; a second pass like the first then fills them from the front, in
   order again, and VACUUM gives the emptied tail back to the file system (its truncation takes
   the exclusive lock only if nobody waits for the chunk, for a moment). The few rows that found
   no room in front (the free space map rounds) land at the very end of the file and would keep
   the tail; they are moved once more, into the first free pages after the front. Each VACUUM
   cleans the indexes even for a few dead rows (`INDEX_CLEANUP ON`): otherwise their line pointers
   stay and the last page is not empty;
3. REINDEX CONCURRENTLY rebuilds the chunk's indexes, which two passes would leave twice their
   size, without blocking reads or writes.

The devices of the chunk are locked FOR KEY SHARE during each pass, so that deleting one of them
waits for the pass rather than miss the rows it moved. A chunk done is recorded in its own
comment (`REORDERED`), so it is done once, and the record goes with the chunk when retention drops
it. Readings written into a chunk after its reorder are not reordered.

Under the community licence none of this runs: `setup_timescaledb` adds TimescaleDB's reorder
policy on the same index, and compression (segmented by device) takes over after 30 days.

Closed: the chunk's time range ended `IOTHUB_TELEMETRY_REORDER_AFTER_HOURS` ago (readings stamped
that long ago are rare). Plain PostgreSQL has no chunks, so there is nothing to do there.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from iothub.telemetry.timescale import TABLE, retention_period, timescale_enabled, timescale_state

REORDERED = "iothub: rows in (device_id, timestamp) order"
ORDER = 'device_id, "timestamp"'
# Blocks of slack past the packed front before a row counts as a straggler (a page the FSM skipped).
STRAGGLER_SLACK = 8


@dataclass(frozen=True)
class Chunk:
    name: str  # schema-qualified, quoted: usable in SQL as is
    range_end: datetime
    reordered: bool


def reorder_after() -> timedelta:
    return timedelta(hours=settings.IOTHUB_TELEMETRY_REORDER_AFTER_HOURS)


def telemetry_chunks() -> list[Chunk]:
    """The telemetry hypertable's chunks, oldest first; none on plain PostgreSQL."""
    if not timescale_enabled():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format('%%I.%%I', chunk_schema, chunk_name), range_end, "
            "obj_description(format('%%I.%%I', chunk_schema, chunk_name)::regclass, 'pg_class') "
            "FROM timescaledb_information.chunks WHERE hypertable_name = %s ORDER BY range_end",
            [TABLE],
        )
        return [Chunk(name, end, comment == REORDERED) for name, end, comment in cursor.fetchall()]


def chunks_to_reorder(*, now: datetime | None = None) -> list[Chunk]:
    """Closed chunks not yet reordered, oldest first; not those retention is about to drop (its
    exclusive lock would wait for the rewrite, and every read of the chunk behind it)."""
    now = now or timezone.now()
    closed_before = now - reorder_after()
    dropped_before = now - retention_period()
    return [c for c in telemetry_chunks() if not c.reordered and dropped_before < c.range_end <= closed_before]


def _rewrite_sorted(cursor, chunk: str, *, from_block: int = 0) -> None:
    """Delete the chunk's rows (those from block `from_block` on) and insert them again, sorted."""
    cursor.execute("BEGIN")
    try:
        # chunk is a name from the catalog, quoted by format('%I.%I').
        cursor.execute(
            f"SELECT 1 FROM devices WHERE id IN (SELECT DISTINCT device_id FROM {chunk}) "  # noqa: S608
            "ORDER BY id FOR KEY SHARE"
        )
        cursor.execute(
            f"WITH moved AS (DELETE FROM {chunk} WHERE ctid >= %s::tid RETURNING *) "  # noqa: S608
            f"INSERT INTO {chunk} SELECT * FROM moved ORDER BY {ORDER}",
            [f"({from_block},0)"],
        )
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise


def _stragglers_from(cursor, chunk: str) -> int | None:
    """The first block past the rows the second pass packed at the front, when some rows lie beyond
    it: those that found no room in front went to the end of the file, where they keep VACUUM from
    giving the emptied pages back. None when there are none."""
    cursor.execute(
        f"SELECT count(DISTINCT (ctid::text::point)[0]), max((ctid::text::point)[0]) FROM {chunk}"  # noqa: S608
    )
    used, last = cursor.fetchone()
    front = int(used or 0) + STRAGGLER_SLACK
    return front if last is not None and last >= front else None


def chunk_reorder(chunk: Chunk) -> None:
    """Rewrite one chunk in device order (see the module's docstring) and record it.

    Runs on a connection of its own in autocommit (VACUUM and REINDEX CONCURRENTLY refuse to run
    inside a transaction), whatever transaction the caller's connection is in."""
    own = connections.create_connection("default")
    try:
        own.ensure_connection()
        own.set_autocommit(True)
        with own.cursor() as cursor:
            for _ in range(2):
                _rewrite_sorted(cursor, chunk.name)
                cursor.execute(f"VACUUM (INDEX_CLEANUP ON) {chunk.name}")
            stragglers = _stragglers_from(cursor, chunk.name)
            if stragglers is not None:
                _rewrite_sorted(cursor, chunk.name, from_block=stragglers)
                cursor.execute(f"VACUUM (INDEX_CLEANUP ON) {chunk.name}")
            cursor.execute(f"REINDEX TABLE CONCURRENTLY {chunk.name}")
            cursor.execute(f"COMMENT ON TABLE {chunk.name} IS %s", [REORDERED])
    finally:
        own.close()


def telemetry_reorder_chunks(*, now: datetime | None = None) -> int:
    """Reorder every closed chunk not yet reordered; how many were. Nothing under the community
    licence, where TimescaleDB's reorder policy and compression (by device) do it."""
    if not timescale_enabled() or timescale_state().has_policies:
        return 0
    todo = chunks_to_reorder(now=now)
    for chunk in todo:
        chunk_reorder(chunk)
    return len(todo)


def chunk_order_counts(*, now: datetime | None = None) -> dict[str, int]:
    """Chunks by state: `reordered`, `waiting` (closed, not yet reordered), `open` (may still be
    written)."""
    closed_before = (now or timezone.now()) - reorder_after()
    counts = {"reordered": 0, "waiting": 0, "open": 0}
    for chunk in telemetry_chunks():
        state = "reordered" if chunk.reordered else "waiting" if chunk.range_end <= closed_before else "open"
        counts[state] += 1
    return counts


def chunk_order_report(*, now: datetime | None = None) -> str:
    """One line for `setup_timescaledb`: how many chunks are in device order."""
    if not timescale_enabled():
        return "device-ordered chunks: none (telemetry is a plain table, without chunks)"
    if timescale_state().has_policies:
        return "device-ordered chunks: by TimescaleDB's reorder policy and compression"
    counts = chunk_order_counts(now=now)
    return (
        f"device-ordered chunks: {counts['reordered']} reordered by (device_id, timestamp), {counts['waiting']} "
        f"closed and waiting for the worker, {counts['open']} open (closed "
        f"{settings.IOTHUB_TELEMETRY_REORDER_AFTER_HOURS} hours after their range ends)"
    )

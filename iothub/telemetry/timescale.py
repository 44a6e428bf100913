"""TimescaleDB for the telemetry table: what the database offers, the idempotent setup, retention.

Three situations, each handled and reported, none silently:

- community licence: hypertable, compression policy and retention policy jobs;
- Apache licence (what Debian builds): hypertable and `drop_chunks`, but no compression and no
  policy jobs, so the hub's worker applies retention itself with `drop_chunks`;
- no extension (plain PostgreSQL): telemetry is a plain table, retention is a `DELETE`, and
  aggregates use `date_bin` instead of `time_bucket`.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from iothub.telemetry.services import ROLLUP_LOCK

TABLE = "telemetry"
TIME_COLUMN = "timestamp"
GIN_INDEX = "idx_telemetry_payload_gin"
DEVICE_TIME_INDEX = "idx_telemetry_device_time"
CHUNK_INTERVAL = timedelta(days=7)
COMPRESS_AFTER = timedelta(days=30)


@dataclass(frozen=True)
class TimescaleState:
    """What the database holds for the telemetry table, read from its catalog."""

    available: bool  # the server has the extension's files and preloads its library
    installed_version: str | None  # the extension created in this database
    license: str | None  # "apache" or "timescale"
    hypertable: bool
    chunk_interval: timedelta | None
    gin_index: bool
    compression_policy: bool
    retention_policy: timedelta | None

    @property
    def has_policies(self) -> bool:
        """Compression and policy jobs exist only under the community (`timescale`) licence."""
        return self.license == "timescale"


def _interval_days(value: timedelta) -> str:
    return f"{value.days} days"


def retention_period() -> timedelta:
    return timedelta(days=settings.IOTHUB_TELEMETRY_RETENTION_DAYS)


def timescale_state() -> TimescaleState:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('shared_preload_libraries')")
        preloaded = "timescaledb" in cursor.fetchone()[0]
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        available = preloaded and cursor.fetchone() is not None
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        row = cursor.fetchone()
        version = row[0] if row else None
        cursor.execute("SELECT 1 FROM pg_indexes WHERE tablename = %s AND indexname = %s", [TABLE, GIN_INDEX])
        gin_index = cursor.fetchone() is not None
        if version is None:
            return TimescaleState(available, None, None, False, None, gin_index, False, None)

        cursor.execute("SELECT current_setting('timescaledb.license', true)")
        license_ = cursor.fetchone()[0]
        cursor.execute(
            "SELECT time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = %s AND column_name = %s",
            [TABLE, TIME_COLUMN],
        )
        row = cursor.fetchone()
        hypertable = row is not None
        chunk_interval = row[0] if row else None
        cursor.execute("SELECT proc_name, config FROM timescaledb_information.jobs WHERE hypertable_name = %s", [TABLE])
        jobs = {name: config for name, config in cursor.fetchall()}
        retention = None
        if "policy_retention" in jobs:
            cursor.execute("SELECT %s::interval", [jobs["policy_retention"]["drop_after"]])
            retention = cursor.fetchone()[0]
        return TimescaleState(
            available=available,
            installed_version=version,
            license=license_,
            hypertable=hypertable,
            chunk_interval=chunk_interval,
            gin_index=gin_index,
            compression_policy="policy_compression" in jobs,
            retention_policy=retention,
        )


# Whether telemetry is a hypertable, per database this process talks to (see timescale_enabled).
_enabled: dict[tuple, tuple[bool, float]] = {}  # (answer, time.monotonic() when asked)
_NOT_ENABLED_RECHECK = 60.0  # seconds


def _database_key() -> tuple:
    db = connection.settings_dict
    return (db["HOST"], db["PORT"], db["NAME"])


def timescale_enabled() -> bool:
    """Whether telemetry is a hypertable in this database (so `time_bucket` and `drop_chunks` work).

    Asked of the catalog once per process and database, not on every query. A "yes" is kept: the
    hypertable goes only with the table itself (dropping the extension drops it). A "no" is asked
    again after a minute, since `setup_timescaledb` may make the hypertable from another process;
    until then the plain-PostgreSQL path answers the same (`date_bin` on the same origin), only
    more slowly. `timescale_setup` in this process forgets both at once.
    """
    key = _database_key()
    known = _enabled.get(key)
    if known and (known[0] or time.monotonic() < known[1] + _NOT_ENABLED_RECHECK):
        return known[0]
    enabled = _timescale_enabled_in_catalog()
    _enabled[key] = (enabled, time.monotonic())
    return enabled


def timescale_forget() -> None:
    """Forget what timescale_enabled learnt, so that its next call asks the catalog."""
    _enabled.clear()


def _timescale_enabled_in_catalog() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') "
            "AND to_regclass('timescaledb_information.hypertables') IS NOT NULL"
        )
        if not cursor.fetchone()[0]:
            return False
        cursor.execute("SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s", [TABLE])
        return cursor.fetchone() is not None


def timescale_setup() -> list[str]:
    """Make the telemetry table what the spec asks for, as far as this database allows.

    Idempotent: each step checks the catalog first. Returns one line per step, saying what was
    done and the resulting state, so that two runs report the same state.
    """
    try:
        return _timescale_setup()
    finally:
        timescale_forget()  # what it made (or found) is asked of the catalog again


def _timescale_setup() -> list[str]:
    report: list[str] = []
    retention = retention_period()
    with transaction.atomic():
        state = timescale_state()
        if state.installed_version is None and state.available:
            with connection.cursor() as cursor:
                cursor.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            report.append("extension timescaledb: created")
            state = timescale_state()

        if state.installed_version is None:
            report.append(
                "extension timescaledb: not available on this server (plain PostgreSQL); telemetry stays a "
                "plain table, aggregates use date_bin, and the worker applies retention with DELETE"
            )
            report.append(_ensure_gin_index(state))
            report.append(f"retention: {retention.days} days, applied by the worker with DELETE")
            return report

        report.append(f"extension timescaledb {state.installed_version}: present, licence {state.license}")
        report.append(_ensure_hypertable(state))
        report.append(_ensure_gin_index(state))
        if state.has_policies:
            report.append(_ensure_compression(state))
            report.append(_ensure_reorder_policy())
            report.append(_ensure_retention_policy(state, retention))
        else:
            report.append(
                f"compression after {COMPRESS_AFTER.days} days: unavailable under the {state.license} "
                "licence (it needs the community licence, e.g. the timescale/timescaledb image)"
            )
            report.append(
                f"retention: {retention.days} days; policy jobs are unavailable under the {state.license} "
                "licence, so the worker drops older chunks itself with drop_chunks"
            )
    return report


def _ensure_hypertable(state: TimescaleState) -> str:
    with connection.cursor() as cursor:
        if not state.hypertable:
            # No default time index: the spec's (device_id, timestamp) index serves the queries, and
            # chunk exclusion serves time ranges across devices.
            cursor.execute(
                "SELECT create_hypertable(%s::regclass, by_range(%s, %s::interval), "
                "create_default_indexes => FALSE, if_not_exists => TRUE, migrate_data => TRUE)",
                [TABLE, TIME_COLUMN, _interval_days(CHUNK_INTERVAL)],
            )
            return f"hypertable on {TIME_COLUMN!r}: created, chunks of {CHUNK_INTERVAL.days} days"
        if state.chunk_interval != CHUNK_INTERVAL:
            cursor.execute(
                "SELECT set_chunk_time_interval(%s::regclass, %s::interval)",
                [TABLE, _interval_days(CHUNK_INTERVAL)],
            )
            return (
                f"hypertable on {TIME_COLUMN!r}: present; chunk interval changed to "
                f"{CHUNK_INTERVAL.days} days for new chunks"
            )
    return f"hypertable on {TIME_COLUMN!r}: present, chunks of {CHUNK_INTERVAL.days} days"


def _ensure_gin_index(state: TimescaleState) -> str:
    if state.gin_index:
        return f"index {GIN_INDEX} (GIN on payload): present"
    with connection.cursor() as cursor:
        cursor.execute("CREATE INDEX IF NOT EXISTS idx_telemetry_payload_gin ON telemetry USING gin (payload)")
    return f"index {GIN_INDEX} (GIN on payload): created"


def _ensure_compression(state: TimescaleState) -> str:
    if state.compression_policy:
        return f"compression after {COMPRESS_AFTER.days} days: policy present"
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE telemetry SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id', "
            "timescaledb.compress_orderby = 'timestamp DESC')"
        )
        cursor.execute(
            "SELECT add_compression_policy(%s::regclass, %s::interval, if_not_exists => TRUE)",
            [TABLE, _interval_days(COMPRESS_AFTER)],
        )
    return f"compression after {COMPRESS_AFTER.days} days: policy created"


def _ensure_reorder_policy() -> str:
    """TimescaleDB's own reorder of closed chunks by the device-time index (community licence);
    the Apache build has none, and the hub's worker does it instead (`iothub/telemetry/chunks.py`)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT add_reorder_policy(%s::regclass, %s, if_not_exists => TRUE)", [TABLE, DEVICE_TIME_INDEX])
    return f"reorder of closed chunks by {DEVICE_TIME_INDEX}: policy present"


def _ensure_retention_policy(state: TimescaleState, retention: timedelta) -> str:
    if state.retention_policy == retention:
        return f"retention of {retention.days} days: policy present"
    with connection.cursor() as cursor:
        if state.retention_policy is not None:
            cursor.execute("SELECT remove_retention_policy(%s::regclass)", [TABLE])
        cursor.execute(
            "SELECT add_retention_policy(%s::regclass, %s::interval, if_not_exists => TRUE)",
            [TABLE, _interval_days(retention)],
        )
    return f"retention of {retention.days} days: policy created"


def telemetry_apply_retention(*, now=None) -> int:
    """Drop telemetry older than the retention period where no policy job does it, and the
    roll-ups of what is gone (wherever it went), in the caller's transaction.

    Returns the number of chunks dropped (hypertable) or rows deleted (plain table); 0 when the
    database's own retention policy is in charge.
    """
    cutoff = (now or timezone.now()) - retention_period()
    with connection.cursor() as cursor:
        # No roll-up pass meanwhile: one that read readings about to go would write their roll-ups
        # after the trim. Passes after this transaction find those readings gone.
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ROLLUP_LOCK])
    if timescale_enabled():
        done = 0
        if timescale_state().retention_policy is None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT drop_chunks(%s::regclass, older_than => %s)", [TABLE, cutoff])
                done = len(cursor.fetchall())
        _rollups_trim(_oldest_chunk_start() or _hour_floor(cutoff))
        return done
    # Whole hours, so that no roll-up bucket is left half deleted: rows stay up to an hour longer.
    cutoff = _hour_floor(cutoff)
    with connection.cursor() as cursor:
        cursor.execute('DELETE FROM telemetry WHERE "timestamp" < %s', [cutoff])
        done = cursor.rowcount
    _rollups_trim(cutoff)
    return done


def _hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _oldest_chunk_start() -> datetime | None:
    """Where the oldest chunk left begins: no reading is older. Chunks begin on whole multiples of
    their interval since 1970, so on whole hours, and a roll-up bucket lies in one chunk."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(range_start) FROM timescaledb_information.chunks WHERE hypertable_name = %s", [TABLE]
        )
        return cursor.fetchone()[0]


def _rollups_trim(before: datetime) -> None:
    """Delete the roll-ups of buckets before `before` (a whole hour): their readings are gone."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM telemetry_rollups WHERE bucket < %s", [before])

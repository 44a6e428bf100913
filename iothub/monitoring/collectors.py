"""Gauges read from the database when Prometheus scrapes, not kept in memory.

Why at scrape time: the queue, the devices and the events live in PostgreSQL and are changed by
every web process and every worker, on any host. A gauge kept in one process would know only
what that process did; the database knows it all, and one scrape every 15 s costs a few index
reads, not one query per request. Each query below reads an index prefix or a small table:

- devices by status: the devices table (one row per machine, small);
- open events by severity: `idx_event_status_time` (status first);
- deliveries pending and failed by channel, and the oldest due one: `idx_notification_delivery_queue`
  (status first), pending and failed rows only (sent ones, the bulk, are never counted);
- telemetry chunks by state: TimescaleDB's catalog of the hypertable's chunks (one per week);
- the roll-up queue's batches, readings and oldest batch: the queue holds the last second or so of
  ingest while the worker runs.

When the database does not answer, `/metrics` still answers with the counters, and
`iothub_database_up` is 0.
"""

import logging
import time

from django.db import DatabaseError, connection
from prometheus_client.core import GaugeMetricFamily

from iothub.telemetry.chunks import chunk_order_counts

logger = logging.getLogger(__name__)

DEVICE_STATUSES = ("active", "inactive", "error")
SEVERITIES = ("critical", "warning", "info")
CHANNELS = ("email", "sms", "webhook")

# A pending delivery is due from its next_attempt_at, as the worker's engine claims it (its
# creation, or its last attempt plus the template's retry_delay_minutes); the age is measured from then.
_DELIVERIES_SQL = """
SELECT d.recipient_type, d.status, count(*), min(CASE WHEN d.status = 'pending' THEN d.next_attempt_at END)
FROM notification_deliveries AS d
WHERE d.status IN ('pending', 'failed')
GROUP BY 1, 2
"""


class HubStateCollector:
    """Registered on the registry `/metrics` builds for each scrape."""

    def collect(self):
        up = GaugeMetricFamily("iothub_database_up", "Whether the database answered this scrape's queries (1) or not.")
        try:
            families = self._families()
        except DatabaseError:
            logger.warning("metrics: the database did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> list:
        now = time.time()
        with connection.cursor() as cursor:
            cursor.execute("SELECT status, count(*) FROM devices GROUP BY status")
            devices = dict(cursor.fetchall())
            cursor.execute(
                "SELECT severity, count(*) FROM events WHERE status IN ('new', 'acknowledged') GROUP BY severity"
            )
            events = dict(cursor.fetchall())
            cursor.execute(_DELIVERIES_SQL)
            deliveries = cursor.fetchall()
            cursor.execute(
                "SELECT count(*), coalesce(sum(cardinality(telemetry_ids)), 0), "
                "coalesce(extract(epoch FROM now() - min(queued_at)), 0) FROM telemetry_rollup_queue"
            )
            rollup_batches, rollup_readings, rollup_age = cursor.fetchone()
        chunks = chunk_order_counts()

        device_family = GaugeMetricFamily("iothub_devices", "Devices by status.", labels=["status"])
        for status in sorted(set(DEVICE_STATUSES) | set(devices)):
            device_family.add_metric([status], devices.get(status, 0))

        event_family = GaugeMetricFamily(
            "iothub_events_open", "Events not yet resolved (new or acknowledged), by severity.", labels=["severity"]
        )
        for severity in sorted(set(SEVERITIES) | set(events)):
            event_family.add_metric([severity], events.get(severity, 0))

        counts: dict[tuple[str, str], int] = {}
        oldest_due: float | None = None
        for channel, status, count, due_since in deliveries:
            counts[(channel, status)] = count
            if due_since is not None and due_since.timestamp() <= now:
                age = now - due_since.timestamp()
                oldest_due = age if oldest_due is None else max(oldest_due, age)
        queue = GaugeMetricFamily(
            "iothub_notification_queue_depth",
            "Deliveries waiting to be sent (pending), by channel; includes those waiting for a retry.",
            labels=["channel"],
        )
        failed = GaugeMetricFamily(
            "iothub_notification_deliveries_failed",
            "Deliveries that failed for good (retries exhausted), by channel.",
            labels=["channel"],
        )
        channels = sorted(set(CHANNELS) | {channel for channel, _ in counts})
        for channel in channels:
            queue.add_metric([channel], counts.get((channel, "pending"), 0))
            failed.add_metric([channel], counts.get((channel, "failed"), 0))
        age = GaugeMetricFamily(
            "iothub_notification_queue_oldest_due_age_seconds",
            "How long the oldest due delivery has been waiting for the worker (0 when none is due).",
        )
        age.add_metric([], round(oldest_due or 0.0, 3))
        chunk_family = GaugeMetricFamily(
            "iothub_telemetry_chunks",
            "Telemetry chunks by state: reordered by (device_id, timestamp), waiting (closed, not yet reordered), "
            "open (may still be written). None on plain PostgreSQL.",
            labels=["state"],
        )
        for state, count in chunks.items():
            chunk_family.add_metric([state], count)

        rollup_queue = GaugeMetricFamily(
            "iothub_telemetry_rollup_queue_readings",
            "Readings stored but not yet rolled up by the worker (answers stay exact; reads get slower).",
        )
        rollup_queue.add_metric([], rollup_readings)
        rollup_batches_family = GaugeMetricFamily(
            "iothub_telemetry_rollup_queue_batches", "Ingest batches waiting in the roll-up queue."
        )
        rollup_batches_family.add_metric([], rollup_batches)
        rollup_age_family = GaugeMetricFamily(
            "iothub_telemetry_rollup_queue_oldest_age_seconds",
            "How long the oldest batch has waited for the worker's roll-up (0 when the queue is empty).",
        )
        rollup_age_family.add_metric([], round(float(rollup_age), 3))
        return [
            device_family,
            event_family,
            queue,
            failed,
            age,
            chunk_family,
            rollup_queue,
            rollup_batches_family,
            rollup_age_family,
        ]

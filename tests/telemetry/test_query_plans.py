"""How the database serves the raw-range query with a metric filter, on a table of realistic size:
200,000 readings of 100 devices over 14 days (three 7-day chunks), read with EXPLAIN."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from iothub.telemetry.selectors import metric_path, telemetry_range

DEVICES = 100
READINGS_PER_DEVICE = 2000  # one every 10 minutes for ~14 days


@pytest.fixture
def realistic_table(vibration_type):
    """Every reading has temperature; one in twenty also has vibration."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO devices (device_type_id, name, serial_number)
            SELECT %s, 'Plan ' || g, 'PLAN-' || g FROM generate_series(1, %s) AS g
            """,
            [vibration_type.id, DEVICES],
        )
        cursor.execute(
            """
            INSERT INTO telemetry (device_id, "timestamp", payload)
            SELECT d.id, now() - g * interval '10 minutes',
                   jsonb_build_object(
                       'version', '0.0.1', 'serial_number', d.serial_number,
                       'metrics', CASE WHEN g %% 20 = 0
                           THEN jsonb_build_object('temperature', 40 + g %% 7, 'vibration', g %% 30)
                           ELSE jsonb_build_object('temperature', 40 + g %% 7) END)
            FROM devices d, generate_series(1, %s) AS g
            WHERE d.serial_number LIKE 'PLAN-%%'
            """,
            [READINGS_PER_DEVICE],
        )
        cursor.execute("ANALYZE telemetry")
        cursor.execute("SELECT id FROM devices WHERE serial_number = 'PLAN-1'")
        return cursor.fetchone()[0]


def explain(sql: str, params) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def chunk_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry'")
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_the_filtered_range_query_uses_the_device_time_index_and_only_the_chunks_in_range(realistic_table):
    end = timezone.now()
    queryset = telemetry_range(
        device_id=realistic_table,
        start=end - timedelta(hours=24),
        end=end,
        metric="vibration",
        comparisons={"gt": Decimal("15")},
    ).order_by("-timestamp")[:100]
    sql, params = queryset.query.sql_with_params()

    plan = explain(sql, params)

    assert "idx_telemetry_device_time" in plan
    assert "Seq Scan" not in plan
    scanned_chunks = set(re.findall(r"Heap Scan on (_hyper_\d+_\d+_chunk)", plan))
    assert 1 <= len(scanned_chunks) <= 2 < chunk_count()  # only the chunks that hold the last 24 hours
    assert '@? \'$."metrics"."vibration"?(@ > 15)\'::jsonpath' in plan


@pytest.mark.django_db
def test_the_payload_gin_index_serves_the_metric_filter(realistic_table):
    # Across all devices the device-time index cannot help; the jsonpath predicate is the one the
    # GIN index can answer. (With a device and a day, the planner rightly prefers the btree.)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = explain("SELECT id FROM telemetry WHERE payload @? %s::jsonpath", [metric_path("vibration")])
    assert "idx_telemetry_payload_gin" in plan
    assert "Bitmap Index Scan" in plan


@pytest.mark.django_db
def test_the_spec_example_containment_matches_no_numeric_reading(realistic_table):
    """Why the filter is a jsonpath: the spec's `@> '{"metrics": {"vibration": {}}}'` is false for
    every reading whose vibration is a number, while the jsonpath finds them."""
    with connection.cursor() as cursor:
        cursor.execute("""SELECT count(*) FROM telemetry WHERE payload @> '{"metrics": {"vibration": {}}}'""")
        by_containment = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM telemetry WHERE payload @? %s::jsonpath", [metric_path("vibration")])
        by_path = cursor.fetchone()[0]
    assert by_containment == 0
    assert by_path == DEVICES * READINGS_PER_DEVICE // 20

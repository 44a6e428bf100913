"""Telemetry storage: the `telemetry` hypertable, TimescaleDB setup, and the read side (ranges,
latest values, time-bucketed aggregates)."""

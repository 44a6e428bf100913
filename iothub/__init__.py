"""IoT Hub Alpha: a self-hosted IoT hub on Django, PostgreSQL and TimescaleDB.

The package tree tells the story: the ground floor (`db`, `metrics`, `recipients`, `outbox`,
`liveness`), the domain apps (`accounts`, `devices`, `telemetry`, `rules`, `events`,
`notifications`, `machines`) above it, the two flows (`ingest`, `worker`) above them, and the faces
(`api`, `dashboard`, `monitoring`, `simulator`) on top. Imports point downward only, checked by
`lint-imports` (docs/architecture.md).
"""

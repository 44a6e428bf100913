"""IoT Hub Alpha: a self-hosted IoT hub on Django, PostgreSQL and TimescaleDB.

The package tree tells the story: domain apps (`devices`, `telemetry`, `rules`, `events`,
`notifications`) at the bottom, the two flows (`ingest`, `worker`) above them, and the faces
(`api`, the admin, `dashboard`) on top. Imports point downward only.
"""

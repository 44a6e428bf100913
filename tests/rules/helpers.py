"""Helpers the rules, events and worker tests share: a rule in one call, a reading sent through
the real ingest endpoint."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal

from django.db import connection

from iothub.rules.models import Rule
from iothub.rules.services import rule_create

INGEST_URL = "/api/v1/telemetry/"


def make_rule(device, **fields) -> Rule:
    """A rule on the device: `vibration > 15`, stop machine M-123, unless told otherwise."""
    fields.setdefault("name", "High vibration")
    fields.setdefault("operator", "gt")
    fields["threshold"] = Decimal(str(fields.get("threshold", "15")))
    fields.setdefault("action_config", [{"type": "stop_machine", "machine_id": "M-123"}])
    return rule_create(device=device, **fields)


def message(device, *, at: datetime | None = None, **metrics) -> dict:
    body = {"version": "0.0.1", "serial_number": device.serial_number, "metrics": metrics}
    if at is not None:
        body["timestamp"] = at.isoformat()
    return body


def send(client, token: str, body) -> dict:
    """POST one message or a batch as the device; assert it was stored; return the reply."""
    response = client.post(
        INGEST_URL, data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 201, response.content
    return response.json()


def run_at_once(task, count: int) -> list:
    """Run `task(i)` in `count` threads released together, each with its own database connection
    (closed after), and return the results in order."""
    barrier = threading.Barrier(count)

    def worker(i):
        try:
            barrier.wait(timeout=30)
            return task(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(worker, range(count)))

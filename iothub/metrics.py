"""The hub's Prometheus counters and histograms, and the calls that move them.

It sits on the ground floor, beside `db.py`, and imports nothing of the hub, so that every layer
may count: the domain apps (deliveries, machine calls), the flows (ingest, the worker) and the faces
(HTTP requests); the monitoring face only exposes them at `/metrics`. Every call here is an
in-memory increment (in multiprocess mode, a write to a memory-mapped file): microseconds, never a
query, so the ingest path stays as fast as it was.

Under gunicorn each worker process counts on its own; with `PROMETHEUS_MULTIPROC_DIR` set (as
gunicorn.conf.py does) every process writes its values to files there and `/metrics` adds them up,
whichever process answers the scrape. State that lives in the database (queue depth, devices by
status, open events) is not counted here but read at scrape time (`monitoring/collectors.py`).
"""

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

SEVERITIES = ("critical", "warning", "info")
CHANNELS = ("email", "sms", "webhook")
DELIVERY_OUTCOMES = ("sent", "retry", "failed")

READINGS_ACCEPTED = Counter("iothub_readings_accepted", "Readings stored by the ingest endpoint.")
READINGS_REJECTED = Counter(
    "iothub_readings_rejected",
    "Readings refused by the ingest endpoint, by HTTP status (a request refused before its body is read counts one).",
    ["status"],
)
INGEST_DURATION = Histogram(
    "iothub_ingest_duration_seconds",
    "Time to answer an ingest request, from the view's entry to its reply (authentication and commit included).",
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RULE_EVALUATIONS = Counter(
    "iothub_rule_evaluations", "Rule evaluations on stored readings (one per reading and enabled rule)."
)
EVENTS_RAISED = Counter("iothub_events_raised", "Events raised by rules, by severity.", ["severity"])
DELIVERIES = Counter(
    "iothub_notification_deliveries",
    "Notification delivery attempts by channel and outcome: sent, retry (failed, will be tried again), failed (final).",
    ["channel", "outcome"],
)
MACHINE_COMMANDS = Counter(
    "iothub_machine_commands",
    "stop_machine calls to the plant's machine API by outcome: completed, retry (will be tried again), failed (final).",
    ["outcome"],
)
WORKER_LAST_ROUND = Gauge(
    "iothub_worker_last_round_timestamp_seconds",
    "Unix time at which a worker on this host last finished a round of its jobs (the newest of all workers).",
    multiprocess_mode="max",
)
HTTP_REQUESTS = Counter(
    "iothub_http_requests", "HTTP requests answered, by route name, method and status.", ["view", "method", "status"]
)

# Known label values start at zero, so a rate() over them works before the first occurrence.
for _severity in SEVERITIES:
    EVENTS_RAISED.labels(severity=_severity)
for _outcome in ("completed", "retry", "failed"):
    MACHINE_COMMANDS.labels(outcome=_outcome)
for _channel in CHANNELS:
    for _outcome in DELIVERY_OUTCOMES:
        DELIVERIES.labels(channel=_channel, outcome=_outcome)


# Labelled children by their labels: `labels()` costs more than the increment, on every request.
_children: dict[tuple, object] = {}


def _child(metric, **labels):
    key = (metric, *labels.values())
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(**labels)
    return child


def ingest_observe(*, status: int, messages: int, seconds: float) -> None:
    """One ingest request answered: `messages` readings stored (201) or refused (any other status)."""
    INGEST_DURATION.observe(seconds)
    if status == 201:
        READINGS_ACCEPTED.inc(messages)
    else:
        _child(READINGS_REJECTED, status=str(status)).inc(max(1, messages))


def rules_evaluated(count: int) -> None:
    if count:
        RULE_EVALUATIONS.inc(count)


def events_raised(severities: Iterable[str]) -> None:
    for severity in severities:
        _child(EVENTS_RAISED, severity=severity).inc()


def delivery_attempted(*, channel: str, outcome: str) -> None:
    DELIVERIES.labels(channel=channel, outcome=outcome).inc()


def machine_command_attempted(*, outcome: str) -> None:
    MACHINE_COMMANDS.labels(outcome=outcome).inc()


def worker_round_finished(timestamp: float) -> None:
    WORKER_LAST_ROUND.set(timestamp)


def http_request_answered(*, view: str, method: str, status: int) -> None:
    _child(HTTP_REQUESTS, view=view, method=method, status=str(status)).inc()


# --- MQTT ingest: the consumer (`manage.py run_ingest`, docs/mqtt.md) -----------------------------

MQTT_OUTCOMES = ("stored", "duplicate", "refused", "unknown_device", "failed")
MQTT_MESSAGES = Counter(
    "iothub_mqtt_messages",
    "MQTT telemetry messages the ingest consumer acknowledged, by outcome: stored; duplicate (a redelivery "
    "of a message already stored, not stored again); refused (answered on the device's errors topic); "
    "unknown_device (its device was deleted meanwhile); failed (refused by the database after retries).",
    ["outcome"],
)
MQTT_REFUSED = Counter(
    "iothub_mqtt_messages_refused", "MQTT messages refused, by the HTTP status of the same refusal.", ["status"]
)
MQTT_READINGS_ACCEPTED = Counter("iothub_mqtt_readings_accepted", "Readings stored from MQTT messages.")
MQTT_RETRIES = Counter(
    "iothub_mqtt_retries",
    "MQTT messages handed to the writer again, unacknowledged, because the database was unavailable or failed.",
)
MQTT_COMMIT_DURATION = Histogram(
    "iothub_mqtt_commit_duration_seconds",
    "Time from a message's arrival at the consumer to the commit of its readings.",
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
for _outcome in MQTT_OUTCOMES:
    MQTT_MESSAGES.labels(outcome=_outcome)


def mqtt_message_finished(
    *, outcome: str, readings: int = 0, seconds: float | None = None, status: int | None = None
) -> None:
    """One MQTT message acknowledged with this outcome (`readings` stored, after `seconds`)."""
    _child(MQTT_MESSAGES, outcome=outcome).inc()
    if readings:
        MQTT_READINGS_ACCEPTED.inc(readings)
    if seconds is not None and outcome == "stored":
        MQTT_COMMIT_DURATION.observe(seconds)
    if status is not None:
        _child(MQTT_REFUSED, status=str(status)).inc()


def mqtt_message_retried() -> None:
    MQTT_RETRIES.inc()

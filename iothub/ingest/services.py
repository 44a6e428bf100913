"""The ingest path: the requests of a batch (any number of devices, from any door) authenticated,
validated, and stored in one transaction with the devices' state and the rules' events. The doors
answer each request only after that transaction commits, so an acknowledged reading is a committed
one.

One batch, one transaction (group commit), in this order:

1. the senders: every device the batch names, with its type and enabled rules, in one query;
2. each request validated on its own: a refused request is answered at once and left out, so one
   bad request never fails its neighbours;
3. the idempotency keys of the requests that carry one, claimed (a key already answered replays
   that answer, and its request writes nothing); likewise the MQTT deliveries (a redelivery of a
   message already stored is answered as stored, and writes nothing);
4. the readings, one INSERT for the whole batch (the telemetry app's), which also upserts their
   roll-up rows after them, sorted by key;
5. the devices' rows, locked in id order, then updated (the devices app's);
6. the states of the stateful rules the readings concern (`rule_states`), locked in rule id order
   in one statement; then the rules of each device that a reading may trigger or that keep a
   state, evaluated by the rules' state machine: cooldown claims, events raised, updated or
   resolved, their outbox rows (notification deliveries, machine commands); the states written
   back in one statement;
7. the answers of keyed requests recorded with their keys; commit.

Why this order is free of deadlocks, in particular at a new TimescaleDB chunk (docs/ingest.md):
creating a chunk takes `ShareRowExclusiveLock` on `devices` for the chunk's foreign key, which
waits for every transaction that has already updated `devices`. Here the readings are inserted
before anything in the transaction updates `devices` or locks its rows, so a transaction that
waits for a chunk holds nothing the chunk's creator waits for; once past step 5 a transaction
waits only for rows of devices, rule states, rules and events, which every transaction locks in
the same order (devices by id, then the states of rules of devices it holds by rule id, then those
rules and their events). Idempotency keys, then MQTT deliveries, are
claimed first, sorted, before any of these.

Failure path, so that nothing is answered 2xx unless its rows are committed:
- a deadlock or serialization failure: the whole batch again (PostgreSQL rolled it back);
- the database unreachable before the commit: the batch again on a fresh connection once (a
  pooled connection may have gone stale while idle), then `Unavailable` for every request;
- the connection lost during the commit: the outcome is unknown, so `Unavailable` (a client that
  retries with its Idempotency-Key gets the first answer if it had committed);
- any other refused statement: each request of the batch again in a transaction of its own, so
  that only the request at fault fails.
"""

import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple
from uuid import UUID

import orjson
import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from iothub import metrics
from iothub.db import DATABASE_ERRORS, database_unavailable, execute_prepared, is_retryable
from iothub.devices.models import Device
from iothub.devices.services import ReadingSeen, device_token_hash, devices_record_readings
from iothub.events.models import Event
from iothub.events.selectors import event_summary
from iothub.events.services import alarm_states_lock
from iothub.ingest.evaluation import readings_evaluate, readings_may_trigger, stateful_rule_ids, states_changed
from iothub.ingest.models import IdempotencyKey
from iothub.ingest.selectors import Sender, senders_get
from iothub.ingest.validation import FieldError, IngestRejected, Limits, messages_validate
from iothub.rules.models import Rule
from iothub.rules.selectors import rules_enabled_for_device
from iothub.rules.services import rule_states_write
from iothub.telemetry.services import NewReading, StoredReading, telemetry_insert

logger = logging.getLogger(__name__)

# Attempts of a batch that PostgreSQL aborted to break a deadlock or a serialization conflict.
ATTEMPTS = 3


class MqttMessageId(NamedTuple):
    """Who an MQTT message is, to the broker session that delivered it: a redelivery (`redelivered`,
    the DUP flag) carries the packet id of its first delivery (docs/mqtt.md)."""

    consumer: str  # the consumer's MQTT client id
    packet_id: int
    fingerprint: str  # SHA-256 of the payload, hex
    redelivered: bool


# Plain (not frozen) slotted dataclasses for what is made per request: a frozen dataclass's
# __init__ costs several times more, at thousands of requests a second.
@dataclass(slots=True)
class IngestRequest:
    """One request as a door received it: a device's message or batch of messages.

    `data` is the decoded JSON body, or the refusal of a body that could not be decoded (kept to
    be answered after authentication, as a door answers an unknown device before a bad body).
    The sender is named by its bearer `token` (HTTP) or, where the door authenticated it already,
    by its `serial_number` (MQTT, whose broker checks the device's credentials)."""

    data: object
    received_at: datetime
    token: str | None = None
    serial_number: str | None = None
    idempotency_key: str | None = None
    fingerprint: str | None = None  # SHA-256 of the body, hex: tells a retry from a key's reuse
    mqtt: MqttMessageId | None = None

    @property
    def message_count(self) -> int:
        return len(self.data) if isinstance(self.data, list) else 1


@dataclass(slots=True)
class Accepted:
    """Stored and committed. `body` is the answer, JSON, made when first asked for (the MQTT door
    never asks); a replayed answer (an Idempotency-Key already answered) is the first one, and
    carries no readings or events of its own; an MQTT redelivery of a message already stored is
    `replayed` with an empty body."""

    answer: bytes | None
    device_id: UUID
    readings: tuple[StoredReading, ...] = ()
    events: tuple[Event, ...] = ()
    replayed: bool = False

    @property
    def body(self) -> bytes:
        if self.answer is None:
            self.answer = ingest_answer(self.readings, self.events)
        return self.answer


@dataclass(slots=True)
class Refused:
    """Refused as a whole, nothing written: the body, a message, or the Idempotency-Key."""

    rejection: IngestRejected
    device_id: UUID


@dataclass(frozen=True)
class UnknownSender:
    """No device has this token (unknown, rotated, revoked) or serial number (deleted)."""


@dataclass(frozen=True)
class Unavailable:
    """The database could not be reached, or the connection was lost while committing: nothing is
    known to be stored, and the request may be sent again."""


@dataclass(frozen=True)
class Failed:
    """The database refused this request's rows for a reason the hub did not foresee (logged with
    its traceback); nothing of it was stored. Its neighbours in the batch are not affected."""

    error: str


UNKNOWN_SENDER = UnknownSender()
UNAVAILABLE = Unavailable()
Outcome = Accepted | Refused | UnknownSender | Unavailable | Failed


def body_fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def ingest_limits() -> Limits:
    return Limits(
        max_batch=settings.IOTHUB_INGEST_MAX_BATCH,
        max_future_skew=settings.IOTHUB_INGEST_MAX_FUTURE_SKEW,
        max_age=settings.IOTHUB_INGEST_MAX_AGE,
    )


def ingest_batch(requests: Sequence[IngestRequest]) -> list[Outcome]:
    """Store a batch of requests: one outcome per request, in order. Runs its own transaction, or
    joins the caller's when called inside one (then a database error is the caller's to handle)."""
    for attempt in range(1, ATTEMPTS + 1):
        progress = _Progress()
        try:
            return _ingest_attempt(requests, progress)
        except DATABASE_ERRORS as error:
            if connection.in_atomic_block:
                raise
            if database_unavailable(error):
                connection.close()
                if progress.committing:
                    logger.error("ingest: connection lost while committing %d requests", len(requests))
                    return [UNAVAILABLE] * len(requests)
                if attempt == 1:
                    logger.warning("ingest: the database connection failed (%s); trying a fresh one", error)
                    continue
                logger.warning("ingest: the database is unavailable (%s)", error)
                return [UNAVAILABLE] * len(requests)
            if is_retryable(error) and attempt < ATTEMPTS:
                logger.warning("ingest: batch of %d requests retried after %s", len(requests), type(error).__name__)
                continue
            if len(requests) > 1:
                logger.warning("ingest: batch of %d refused (%s); storing each request alone", len(requests), error)
                return [outcome for request in requests for outcome in ingest_batch([request])]
            if progress.sender_deleted(error):
                return [UNKNOWN_SENDER]
            logger.exception("ingest: the database refused a request")
            return [Failed(str(error))]
    raise AssertionError("unreachable")


@dataclass
class _Progress:
    committing: bool = False

    @staticmethod
    def sender_deleted(error: BaseException) -> bool:
        """A foreign key to `devices` refused the request's rows: its device was deleted while the
        request was in flight."""
        cause = error if isinstance(error, psycopg.Error) else error.__cause__
        return isinstance(cause, psycopg.errors.ForeignKeyViolation) and cause.diag.table_name in {
            "telemetry",
            "ingest_idempotency_keys",
        }


@dataclass
class _Plan:
    """A request that passed validation, and what storing it gave."""

    index: int
    sender: Sender
    readings: list[NewReading]
    request: IngestRequest | None = None
    stored: list[StoredReading] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def _ingest_attempt(requests: Sequence[IngestRequest], progress: _Progress) -> list[Outcome]:
    token_hashes = {r.token: device_token_hash(r.token) for r in requests if r.token is not None}
    senders = senders_get(
        token_hashes=set(token_hashes.values()),
        serial_numbers={r.serial_number for r in requests if r.serial_number is not None},
    )
    outcomes: list[Outcome | None] = [None] * len(requests)
    plans: list[_Plan] = []
    limits = ingest_limits()
    for index, request in enumerate(requests):
        if request.token is not None:
            sender = senders.by_token_hash.get(token_hashes[request.token])
        else:
            sender = senders.by_serial_number.get(request.serial_number)
        if sender is None:
            outcomes[index] = UNKNOWN_SENDER
            continue
        if isinstance(request.data, IngestRejected):
            outcomes[index] = Refused(request.data, sender.device.id)
            continue
        try:
            readings, _ = messages_validate(
                request.data, serial_number=sender.device.serial_number, now=request.received_at, limits=limits
            )
        except IngestRejected as rejected:
            outcomes[index] = Refused(rejected, sender.device.id)
            continue
        plans.append(_Plan(index=index, sender=sender, readings=readings, request=request))
    if plans:
        with transaction.atomic():
            stored = _store(plans)
            progress.committing = True
        for index, outcome in stored.items():
            outcomes[index] = outcome
        metrics.events_raised(e.severity for o in stored.values() if isinstance(o, Accepted) for e in o.events)
    return outcomes


def _store(plans: list[_Plan]) -> dict[int, Outcome]:
    """Steps 3 to 7 of the module's docstring, inside the batch's transaction."""
    outcomes: dict[int, Outcome] = {}
    writing = plans
    keyed = [p for p in plans if p.request is not None and p.request.idempotency_key is not None]
    if keyed:
        outcomes.update(_keys_claim(keyed))
        writing = [p for p in plans if p.index not in outcomes]
    delivered = [p for p in writing if p.request is not None and p.request.mqtt is not None]
    if delivered:
        outcomes.update(_mqtt_deliveries_claim(delivered))
        writing = [p for p in writing if p.index not in outcomes]

    stored = iter(
        telemetry_insert(rows=[(plan.sender.device.id, reading) for plan in writing for reading in plan.readings])
    )
    by_device: dict[UUID, list[_Plan]] = defaultdict(list)
    for plan in writing:
        plan.stored = [next(stored) for _ in plan.readings]
        by_device[plan.sender.device.id].append(plan)

    statuses = devices_record_readings(
        readings={
            device_id: [ReadingSeen(r.id, r.timestamp, r.metrics) for plan in device_plans for r in plan.stored]
            for device_id, device_plans in by_device.items()
        }
    )
    # The states of the stateful rules these readings concern, all locked in one statement, in
    # rule id order, after the devices' rows (docs/ingest.md).
    stateful = [
        rule_id
        for device_plans in by_device.values()
        for rule_id in stateful_rule_ids(
            device=device_plans[0].sender.device,
            readings=[r for plan in device_plans for r in plan.stored],
            rules=device_plans[0].sender.rules,
        )
    ]
    states = alarm_states_lock(rule_ids=stateful) if stateful else {}
    before = dict(states)
    for device_id, device_plans in by_device.items():
        sender = device_plans[0].sender
        sender.device.status = statuses[device_id]
        _rules_evaluate(sender, device_plans, states)
    if states:
        rules = [rule for plans in by_device.values() for rule in plans[0].sender.rules]
        rule_states_write(states=states_changed(before, states, rules))

    for plan in writing:
        outcomes[plan.index] = Accepted(
            answer=None,
            device_id=plan.sender.device.id,
            readings=tuple(plan.stored),
            events=tuple(plan.events),
        )
    if keyed:
        written = {plan.index for plan in writing}
        _keys_record([p for p in keyed if p.index in written], outcomes)
        _keys_replay_followers(keyed, outcomes)
    return outcomes


def _rules_evaluate(sender: Sender, plans: list[_Plan], states: dict) -> None:
    """The device's rules on the readings of all its requests in the batch, in timestamp order (as
    one request's batch is); each event goes to the request whose reading raised it. `states`: the
    batch's locked rule states, updated in place."""
    readings = [r for plan in plans for r in plan.stored]
    if not sender.rules or not readings_may_trigger(device=sender.device, readings=readings, rules=sender.rules):
        return
    events = readings_evaluate(device=sender.device, readings=readings, rules=sender.rules, states=states)
    if not events:
        return
    owner = {r.id: plan for plan in plans for r in plan.stored}
    for event in events:
        owner[event.telemetry_id].events.append(event)


def ingest_answer(readings: Sequence[StoredReading], events: Sequence[Event]) -> bytes:
    """The answer to a stored request, JSON: what was stored, and the events it raised. Times in
    ISO 8601 with `Z`, as the API writes them everywhere."""
    return orjson.dumps(
        {
            "count": len(readings),
            "readings": [{"id": r.id, "timestamp": r.timestamp} for r in readings],
            "events": [event_summary(e) for e in events],
        },
        option=orjson.OPT_UTC_Z,
    )


# --- Idempotency keys ------------------------------------------------------------------------

# A key is claimed by inserting it; one kept longer than the keeping time is claimed again. Sorted,
# so that two batches claiming overlapping keys wait for each other in one order. A key another
# transaction holds uncommitted makes this one wait for it, and then it conflicts (its answer is
# replayed) or, if that transaction rolled back, it is claimed here.
_KEYS_CLAIM_SQL = """
INSERT INTO ingest_idempotency_keys AS k (device_id, key, fingerprint)
SELECT * FROM unnest(%(device_ids)s::uuid[], %(keys)s::text[], %(fingerprints)s::text[]) ORDER BY 1, 2
ON CONFLICT (device_id, key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, created_at = now(), status = NULL, response = NULL
    WHERE k.created_at < now() - make_interval(secs => %(keep_seconds)s)
RETURNING device_id, key
"""
_KEYS_READ_SQL = """
SELECT k.device_id, k.key, k.fingerprint, k.response
FROM ingest_idempotency_keys AS k
JOIN unnest(%(device_ids)s::uuid[], %(keys)s::text[]) AS wanted(device_id, key) USING (device_id, key)
"""
_KEYS_RECORD_SQL = """
UPDATE ingest_idempotency_keys AS k SET status = 201, response = r.response
FROM unnest(%(device_ids)s::uuid[], %(keys)s::text[], %(responses)s::text[]) AS r(device_id, key, response)
WHERE k.device_id = r.device_id AND k.key = r.key
"""


def idempotency_keep() -> timedelta:
    return timedelta(hours=settings.IOTHUB_INGEST_IDEMPOTENCY_HOURS)


def idempotency_keys_expire(*, now: datetime | None = None) -> int:
    """Delete the keys kept longer than the keeping time; returns how many went. (A key past its
    time is claimed anew by its next request anyway: this only keeps the table small.) The writer
    calls it every hour."""
    cutoff = (now or timezone.now()) - idempotency_keep()
    return IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()[0]


def _key_of(plan: _Plan) -> tuple[UUID, str]:
    return (plan.sender.device.id, plan.request.idempotency_key)


def _keys_claim(keyed: list[_Plan]) -> dict[int, Outcome]:
    """Claim the keys of the batch's keyed requests; returns the outcomes of those that need no
    write: a key answered before (its answer replayed, or a refusal if the body differs), and
    a key repeated within this batch (answered once the first request of it is stored)."""
    first: dict[tuple[UUID, str], _Plan] = {}
    for plan in keyed:
        first.setdefault(_key_of(plan), plan)
    wanted = sorted(first)
    claimed = {
        (device_id, key)
        for device_id, key in execute_prepared(
            _KEYS_CLAIM_SQL,
            {
                "device_ids": [device_id for device_id, _ in wanted],
                "keys": [key for _, key in wanted],
                "fingerprints": [first[k].request.fingerprint for k in wanted],
                "keep_seconds": idempotency_keep().total_seconds(),
            },
        )
    }
    answered = [k for k in wanted if k not in claimed]
    previous = {}
    if answered:
        rows = execute_prepared(
            _KEYS_READ_SQL,
            {"device_ids": [device_id for device_id, _ in answered], "keys": [key for _, key in answered]},
        )
        previous = {(device_id, key): (fingerprint, response) for device_id, key, fingerprint, response in rows}
    outcomes: dict[int, Outcome] = {}
    for plan in keyed:
        key = _key_of(plan)
        if key in previous:
            fingerprint, response = previous[key]
            outcomes[plan.index] = _replay(plan, fingerprint, response.encode())
        elif first[key] is not plan:
            outcomes[plan.index] = _PENDING_REPLAY  # the first request of its key is stored below
    return outcomes


# The outcome of a request whose key an earlier request of the same batch carries, until that one
# is stored (`_keys_replay_followers`).
_PENDING_REPLAY = object()


def _replay(plan: _Plan, fingerprint: str, body: bytes) -> Outcome:
    device_id = plan.sender.device.id
    if fingerprint != plan.request.fingerprint:
        message = (
            f"was used for a different body within the last {settings.IOTHUB_INGEST_IDEMPOTENCY_HOURS} hours; "
            "send a new key with a new request"
        )
        return Refused(IngestRejected(422, [FieldError("Idempotency-Key", message)]), device_id)
    return Accepted(answer=body, device_id=device_id, replayed=True)


def _keys_record(written: list[_Plan], outcomes: dict[int, Outcome]) -> None:
    if not written:
        return
    execute_prepared(
        _KEYS_RECORD_SQL,
        {
            "device_ids": [p.sender.device.id for p in written],
            "keys": [p.request.idempotency_key for p in written],
            "responses": [outcomes[p.index].body.decode() for p in written],
        },
    )


def _keys_replay_followers(keyed: list[_Plan], outcomes: dict[int, Outcome]) -> None:
    first: dict[tuple[UUID, str], _Plan] = {}
    for plan in keyed:
        first.setdefault(_key_of(plan), plan)
    for plan in keyed:
        if outcomes.get(plan.index) is _PENDING_REPLAY:
            leader = first[_key_of(plan)]
            outcomes[plan.index] = _replay(plan, leader.request.fingerprint, outcomes[leader.index].body)


# --- MQTT deliveries ---------------------------------------------------------------------------

# A consumer's broker session delivers each message with a packet id, and after a reconnection
# delivers again, with the DUP flag and the same packet id, every message it had not seen
# acknowledged. A row per (consumer, packet id) says which message was stored under it last:
# - a first delivery (no DUP) is never a repeat: it claims its packet id whatever the row held;
# - a redelivery claims it only if the row holds another payload (or nothing); if it holds this
#   payload, that message was stored before its acknowledgement was lost: answered as stored.
# Sorted, so that two transactions claiming the same rows (a consumer's old connection still
# committing while its new one takes the redelivery) wait for each other in one order.
_MQTT_CLAIM_SQL = """
INSERT INTO ingest_mqtt_deliveries AS d (consumer, packet_id, fingerprint, redelivered)
SELECT r ->> 0, (r ->> 1)::int, r ->> 2, (r ->> 3)::bool FROM jsonb_array_elements(%(rows)s::jsonb) AS r
ORDER BY 1, 2
ON CONFLICT (consumer, packet_id) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, redelivered = EXCLUDED.redelivered, stored_at = now()
    WHERE NOT EXCLUDED.redelivered OR d.fingerprint <> EXCLUDED.fingerprint
RETURNING consumer, packet_id
"""
# Mosquitto gives a session's packet ids in turn, 1 to 65535, so an id comes back 65,535 messages
# later. A row matters only while the broker may still redeliver its message: at most a Receive
# Maximum (10,000 at most) of messages behind the newest first delivery. Rows further behind are
# deleted at each batch, long before their packet id comes back: otherwise a message that had the
# same payload as the one stored under its id 65,535 messages earlier (a constant reading without a
# timestamp), redelivered after a crash that came before its first delivery was stored, would be
# taken for that earlier one and lost. The ranges are written so that an index scan finds them:
# packet ids in (wrap_low, wrap_high), or below `low`, or above `high`.
MQTT_PACKET_IDS = 65535
MQTT_DELIVERIES_KEPT = 30_000
_MQTT_FORGET_SQL = """
DELETE FROM ingest_mqtt_deliveries
WHERE consumer = %(consumer)s
  AND ((packet_id > %(wrap_low)s AND packet_id < %(wrap_high)s) OR packet_id < %(low)s OR packet_id > %(high)s)
"""


def mqtt_forget_bounds(newest: int) -> dict[str, int]:
    """The packet ids to forget once `newest` is the newest first delivery: those more than
    MQTT_DELIVERIES_KEPT behind it, counting round from 65535 to 1."""
    oldest_kept = newest - MQTT_DELIVERIES_KEPT
    if oldest_kept >= 1:  # kept: oldest_kept .. newest
        return {"wrap_low": 0, "wrap_high": 0, "low": oldest_kept, "high": newest}
    # kept: 1 .. newest and oldest_kept + 65535 .. 65535
    return {"wrap_low": newest, "wrap_high": oldest_kept + MQTT_PACKET_IDS, "low": 1, "high": MQTT_PACKET_IDS}


def _mqtt_deliveries_claim(delivered: list[_Plan]) -> dict[int, Outcome]:
    """Claim the packet ids of the batch's MQTT messages; returns the outcomes of the redeliveries
    of messages already stored (and of a packet id repeated within the batch), which write nothing."""
    first: dict[tuple[str, int], _Plan] = {}
    for plan in delivered:
        first.setdefault((plan.request.mqtt.consumer, plan.request.mqtt.packet_id), plan)
    wanted = sorted(first)
    ids = [first[key].request.mqtt for key in wanted]
    claimed = set(
        execute_prepared(
            _MQTT_CLAIM_SQL,
            # One JSON document, `[[consumer, packet id, fingerprint, redelivered], ...]`.
            {"rows": orjson.dumps([(i.consumer, i.packet_id, i.fingerprint, i.redelivered) for i in ids]).decode()},
        )
    )
    newest: dict[str, int] = {}
    for plan in delivered:  # in the order the consumer received them
        if not plan.request.mqtt.redelivered:
            newest[plan.request.mqtt.consumer] = plan.request.mqtt.packet_id
    for consumer, packet_id in newest.items():
        execute_prepared(_MQTT_FORGET_SQL, {"consumer": consumer, **mqtt_forget_bounds(packet_id)})
    outcomes: dict[int, Outcome] = {}
    for plan in delivered:
        key = (plan.request.mqtt.consumer, plan.request.mqtt.packet_id)
        if first[key] is not plan or key not in claimed:
            outcomes[plan.index] = Accepted(answer=b"", device_id=plan.sender.device.id, replayed=True)
    return outcomes


# --- Callers that hold validated readings of one device ----------------------------------------


@dataclass(frozen=True)
class IngestResult:
    readings: list[StoredReading]
    events: list[Event]


def telemetry_ingest(
    *, device: Device, readings: Sequence[NewReading], rules: Sequence[Rule] | None = None
) -> IngestResult:
    """Store validated readings of one device, with its state and its rules' events, exactly as a
    request's are; all or nothing. For callers that hold readings already (demo data, tests);
    `device` must carry its `device_type`. `rules`: its enabled rules, read here when None."""
    if rules is None:
        rules = rules_enabled_for_device(device_id=device.id)
    for rule in rules:
        rule.device = device
    plan = _Plan(index=0, sender=Sender(device=device, rules=list(rules)), readings=list(readings))
    with transaction.atomic():
        _store([plan])
    metrics.events_raised(e.severity for e in plan.events)
    return IngestResult(readings=plan.stored, events=plan.events)

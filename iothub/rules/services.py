"""Writes to rules: creating, editing and deleting them, and claiming a trigger under cooldown."""

import re
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import connection, transaction

from iothub.devices.models import Device
from iothub.rules.actions import NOTIFICATION, action_config_validate, rule_actions
from iothub.rules.conditions import DEFAULT_COOLDOWN_MINUTES
from iothub.rules.machine import State, rule_is_stateful
from iothub.rules.models import Operator, Rule, Severity

MAX_COOLDOWN_MINUTES = 366 * 24 * 60  # a year; longer is a disabled rule in disguise
# A metric name as telemetry messages carry it (letters first; digits, `_`, `.`, `-` after).
METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,49}")

MAX_DURATION_SECONDS = 366 * 24 * 60 * 60
MAX_REMINDER_MINUTES = MAX_COOLDOWN_MINUTES
MAX_REMINDER_LIMIT = 1000
# The alarm options (docs/rules.md), each optional, with the value that keeps the spec's behaviour.
ALARM_DEFAULTS = {
    "duration_seconds": 0,
    "clear_threshold": None,
    "clear_duration_seconds": 0,
    "auto_resolve": False,
    "dedupe_while_open": False,
    "reminder_minutes": None,
    "reminder_limit": None,
    "escalation": None,
}
ALARM_FIELDS = tuple(ALARM_DEFAULTS)

EDITABLE_FIELDS = (
    "device",
    "name",
    "description",
    "operator",
    "threshold",
    "metric",
    "severity",
    "cooldown_minutes",
    "is_enabled",
    "action_config",
    *ALARM_FIELDS,
)


def rule_clean(*, rule: Rule) -> None:
    """Validate a rule before it is written, naming the field of each problem."""
    errors: dict[str, list[str]] = {}
    try:
        rule.full_clean(exclude=["action_config"], validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if rule.metric is not None and not METRIC_NAME.fullmatch(rule.metric):
        errors.setdefault("metric", []).append(
            f"{rule.metric!r} is not a metric name: a letter, then letters, digits, _ . - (at most 50)"
        )
    if rule.cooldown_minutes is not None and not 0 <= rule.cooldown_minutes <= MAX_COOLDOWN_MINUTES:
        errors.setdefault("cooldown_minutes", []).append(f"must be between 0 and {MAX_COOLDOWN_MINUTES}")
    try:
        action_config_validate(rule.action_config)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    for name, problem in alarm_problems(rule):
        errors.setdefault(name, []).append(problem)
    if errors:
        raise ValidationError(errors)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def alarm_problems(rule: Rule) -> list[tuple[str, str]]:
    """The problems of a rule's alarm options, as (field, message) pairs; none for a rule that
    leaves them at their defaults."""
    problems: list[tuple[str, str]] = []
    nodata = rule.operator == Operator.NODATA
    for name, limit in (("duration_seconds", MAX_DURATION_SECONDS), ("clear_duration_seconds", MAX_DURATION_SECONDS)):
        value = getattr(rule, name)
        if not _whole(value) or not 0 <= value <= limit:
            problems.append((name, f"must be a whole number of seconds between 0 and {limit}"))
    if nodata and _whole(rule.duration_seconds) and rule.duration_seconds < 1:
        problems.append(("duration_seconds", "a nodata rule needs it: how long without a reading raises the event"))
    if rule.clear_threshold is not None:
        if nodata or rule.operator in (Operator.EQ, Operator.NEQ):
            problems.append(("clear_threshold", f"applies only to gt, gte, lt and lte rules, not {rule.operator}"))
        elif rule.threshold is not None:
            upward = rule.operator in (Operator.GT, Operator.GTE)
            if upward and rule.clear_threshold > rule.threshold:
                problems.append(("clear_threshold", "must not be above threshold: the safe side of a gt rule is below"))
            if not upward and rule.clear_threshold < rule.threshold:
                problems.append(
                    ("clear_threshold", "must not be below threshold: the safe side of an lt rule is above")
                )
    if rule.reminder_minutes is not None:
        if not _whole(rule.reminder_minutes) or not 1 <= rule.reminder_minutes <= MAX_REMINDER_MINUTES:
            problems.append(("reminder_minutes", f"must be between 1 and {MAX_REMINDER_MINUTES}, or null"))
        elif not any(isinstance(a, dict) and a.get("type") == NOTIFICATION for a in rule_actions(rule)):
            problems.append(("reminder_minutes", "the rule has no notification action to send again"))
    if rule.reminder_limit is not None:
        if not _whole(rule.reminder_limit) or not 1 <= rule.reminder_limit <= MAX_REMINDER_LIMIT:
            problems.append(("reminder_limit", f"must be between 1 and {MAX_REMINDER_LIMIT}, or null"))
        elif rule.reminder_minutes is None:
            problems.append(("reminder_limit", "needs reminder_minutes"))
    if rule.escalation is not None:
        problems.extend(("escalation", problem) for problem in escalation_problems(rule.escalation))
    return problems


def escalation_problems(escalation: object) -> list[str]:
    """`escalation` is `{"after_minutes": 1.., "template_id": an active template}`."""
    if not isinstance(escalation, dict):
        return ['must be an object: {"after_minutes": 30, "template_id": 5}, or null']
    problems = [f"{key}: is required" for key in ("after_minutes", "template_id") if key not in escalation]
    problems += [
        f"{key}: unknown key; it takes after_minutes, template_id"
        for key in sorted(set(escalation) - {"after_minutes", "template_id"})
    ]
    minutes = escalation.get("after_minutes")
    if "after_minutes" in escalation and (not _whole(minutes) or not 1 <= minutes <= MAX_REMINDER_MINUTES):
        problems.append(f"after_minutes: must be between 1 and {MAX_REMINDER_MINUTES}")
    if "template_id" in escalation:
        action = {"type": NOTIFICATION, "template_id": escalation["template_id"]}
        try:
            action_config_validate([action])
        except ValidationError as exc:
            problems += [m.replace("[0].", "") for m in exc.message_dict["action_config"]]
    return problems


@transaction.atomic
def rule_create(
    *,
    device: Device,
    name: str,
    operator: str,
    threshold: Decimal,
    action_config: list[dict],
    description: str | None = None,
    metric: str | None = None,
    severity: str = Severity.WARNING,
    cooldown_minutes: int = DEFAULT_COOLDOWN_MINUTES,
    is_enabled: bool = True,
    **alarm,
) -> Rule:
    """Create a rule; `alarm`: any of `ALARM_FIELDS` (docs/rules.md), the rest at their defaults."""
    unknown = set(alarm) - set(ALARM_FIELDS)
    if unknown:
        raise TypeError(f"unknown rule fields: {', '.join(sorted(unknown))}")
    rule = Rule(
        device=device,
        name=name,
        description=description,
        operator=operator,
        threshold=threshold,
        action_config=action_config,
        metric=metric or None,
        severity=severity,
        cooldown_minutes=cooldown_minutes,
        is_enabled=is_enabled,
        **{**ALARM_DEFAULTS, **alarm},
    )
    rule_clean(rule=rule)
    rule.save(force_insert=True)
    rule_state_make(rule=rule)
    return rule


@transaction.atomic
def rule_update(*, rule: Rule, data: dict) -> Rule:
    """Change the given fields of a rule. The change applies to the next message of every ingest
    process: evaluation reads the rules from the database on each request."""
    unknown = set(data) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationError({name: ["cannot be changed"] for name in sorted(unknown)})
    # The rule's state row first, as every holder of both locks them (docs/ingest.md): an edit of the
    # condition starts the rule over (ok), keeping the event it has open.
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM rule_states WHERE rule_id = %s FOR NO KEY UPDATE", [rule.pk])
    for name, value in data.items():
        setattr(rule, name, value)
    if "metric" in data:
        rule.metric = rule.metric or None
    rule_clean(rule=rule)
    rule.save(update_fields=[*data, "updated_at"])
    if set(data) & _CONDITION_FIELDS:
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE rule_states SET phase = 'ok', since = NULL, updated_at = now() WHERE rule_id = %s", [rule.pk]
            )
    rule_state_make(rule=rule)
    return rule


# What the state machine judges readings by: changing any of them starts the rule's state over.
_CONDITION_FIELDS = {"operator", "threshold", "metric", "duration_seconds", "clear_threshold", "clear_duration_seconds"}


class RuleHasEvents(Exception):
    """A rule that raised events is kept for their history; disable it instead."""


@transaction.atomic
def rule_delete(*, rule: Rule) -> None:
    """Delete a rule that never raised an event. One that did is refused: deleting it would delete
    its events (the foreign key cascades), and an event history is not lost by a rule edit."""
    with connection.cursor() as cursor:  # the state row first, as everyone locks them
        cursor.execute("SELECT 1 FROM rule_states WHERE rule_id = %s FOR NO KEY UPDATE", [rule.pk])
    locked = Rule.objects.select_for_update().get(pk=rule.pk)
    count = locked.events.count()
    if count:
        raise RuleHasEvents(
            f"The rule has raised {count} event{'s' if count != 1 else ''}; they would be deleted with it. "
            "Disable the rule instead (is_enabled: false)."
        )
    locked.delete()


# The cooldown claim: one statement that moves `last_triggered_at` to the reading's time only if
# the rule is enabled and the cooldown since the last trigger has passed, measured on readings'
# timestamps. The row lock makes concurrent claims for one rule take turns, and the loser re-reads
# the winner's `last_triggered_at`, so concurrent messages raise one event, not two. A reading
# older than the last trigger never claims (its time minus the cooldown is earlier still), so
# `last_triggered_at` never moves backwards and a late, buffered backlog cannot re-trigger.
_CLAIM_SQL = """
    UPDATE rules SET last_triggered_at = %(at)s
    WHERE id = %(rule_id)s
      AND is_enabled
      AND (
        last_triggered_at IS NULL
        OR last_triggered_at <= %(at)s - make_interval(mins => COALESCE(cooldown_minutes, %(default)s))
      )
    RETURNING id
"""


def rule_trigger_claim(*, rule_id: UUID, at: datetime) -> bool:
    """Claim the right to raise an event for a reading taken at `at`; True if claimed.

    Runs inside the caller's transaction, which holds the rule's row lock until it commits.
    """
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, {"rule_id": rule_id, "at": at, "default": DEFAULT_COOLDOWN_MINUTES})
        return cursor.fetchone() is not None


# ------------------------------------------------------------------------------------------------
# The rules' states (`rule_states`): read under their row locks, written back when they change
# ------------------------------------------------------------------------------------------------

# Locked in rule id order, after the devices' rows (ingest) and before any rule's cooldown claim or
# event: every holder of more than one takes them in this order (docs/ingest.md). The rule's
# `last_triggered_at` is read with it: under this lock only its holder claims the rule.
_STATES_LOCK_SQL = """
    SELECT s.rule_id, s.phase, s.since, s.last_reading_at, s.open_event_id, r.last_triggered_at
    FROM rule_states s
    JOIN rules r ON r.id = s.rule_id
    WHERE s.rule_id = ANY(%s)
    ORDER BY s.rule_id
    FOR NO KEY UPDATE OF s
"""
_STATES_MAKE_SQL = "INSERT INTO rule_states (rule_id) SELECT unnest(%s::uuid[]) ON CONFLICT DO NOTHING"


def rule_states_lock(*, rule_ids: list[UUID], skip_locked: bool = False) -> dict[UUID, State]:
    """The states of these rules, each row locked until the transaction ends; a rule without a
    state row (one written by a SQL client) gets one first. `skip_locked`: leave out rows another
    transaction holds (the worker's nodata look, which has no reading to wait for). `open_event`
    is the id as stored: whether that event is still open is the events app's to say
    (`iothub.events.services.alarm_states_lock`)."""
    if not rule_ids:
        return {}
    ids = sorted(set(rule_ids), key=lambda u: u.int)
    sql = _STATES_LOCK_SQL + (" SKIP LOCKED" if skip_locked else "")
    with connection.cursor() as cursor:
        cursor.execute(sql, [ids])
        rows = cursor.fetchall()
        if len(rows) < len(ids) and not skip_locked:
            cursor.execute(_STATES_MAKE_SQL, [ids])
            cursor.execute(sql, [ids])
            rows = cursor.fetchall()
    return {
        rule_id: State(phase=phase, since=since, last_reading_at=last, open_event=event, last_triggered_at=triggered)
        for rule_id, phase, since, last, event, triggered in rows
    }


def rule_states_write(*, states: dict[UUID, State]) -> None:
    """Write back states this transaction holds locked (`rule_states_lock`), in one statement."""
    if not states:
        return
    ids = list(states)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE rule_states s
            SET phase = v.phase, since = v.since, last_reading_at = v.last_reading_at,
                open_event_id = v.open_event_id, updated_at = now()
            FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::bigint[])
                AS v(rule_id, phase, since, last_reading_at, open_event_id)
            WHERE s.rule_id = v.rule_id
            """,
            [
                ids,
                [states[i].phase for i in ids],
                [states[i].since for i in ids],
                [states[i].last_reading_at for i in ids],
                [states[i].open_event or None for i in ids],
            ],
        )


def rule_state_make(*, rule: Rule) -> None:
    """Give a rule that uses the alarm options its state row (ok), so ingest finds it locked-ready."""
    if rule_is_stateful(rule):
        with connection.cursor() as cursor:
            cursor.execute(_STATES_MAKE_SQL, [[rule.id]])

"""What a rule does when it triggers: the `action_config` list and its validation.

The spec's example is the format:

    [
      {"type": "notification", "template_id": 5, "recipients": ["admin@company.com"]},
      {"type": "stop_machine", "machine_id": "M-123"}
    ]

- `notification`: `template_id` (required) names an existing, active notification template;
  `recipients` (optional) adds to the template's own: a bare string is an email address, an object
  has the templates' shape (`{"type": "email", "address"}`, `{"type": "sms", "phone"}`,
  `{"type": "webhook", "url"}`, each with an optional `name`).
- `stop_machine`: `machine_id` (required), the plant's identifier of the machine to stop.

Unknown action types and unknown keys are refused, so that a typo (`"machine"` for `"machine_id"`)
is caught when the rule is saved, not when it fires. The API and the admin both validate through
`action_config_validate`; nothing here knows of HTTP.

What an action refers to in a table another app owns (a notification's template) is checked by
that app, which sits above rules: it registers its check here when Django starts
(`action_reference_check_register`, from `NotificationsConfig.ready`). So rules import nothing
above them, and a rule is still validated whole wherever it is saved.
"""

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ValidationError

from iothub.recipients import RecipientError, recipients_parse

NOTIFICATION = "notification"
STOP_MACHINE = "stop_machine"
ACTION_TYPES = (NOTIFICATION, STOP_MACHINE)

ACTION_KEYS = {
    NOTIFICATION: {"required": {"type", "template_id"}, "optional": {"recipients"}},
    STOP_MACHINE: {"required": {"type", "machine_id"}, "optional": set()},
}

MAX_ACTIONS = 20
MACHINE_ID_MAX_LENGTH = 255  # machine_commands.machine_id

# Given the (position, action) pairs of one action type, the problems with what they refer to, as
# (position, message) pairs; messages start with the position and key, like the shape's.
ReferenceCheck = Callable[[list[tuple[int, dict]]], list[tuple[int, str]]]
_reference_checks: dict[str, ReferenceCheck] = {}


def action_reference_check_register(kind: str, check: ReferenceCheck) -> None:
    """Let the app that owns what `kind` actions refer to check those references on every save."""
    if kind not in ACTION_TYPES:
        raise ValueError(f"{kind!r} is not an action type; expected one of {', '.join(ACTION_TYPES)}")
    _reference_checks[kind] = check


def action_config_validate(config: object) -> list[dict]:
    """Return `config` if it is a valid action list, else raise `ValidationError` on the field
    `action_config` with one message per problem, each starting with the action's position and
    key (`[1].machine_id: is required`)."""
    if not isinstance(config, list):
        raise ValidationError({"action_config": ['must be a list of actions, e.g. [{"type": "stop_machine", ...}]']})
    if not config:
        raise ValidationError({"action_config": ["must hold at least one action"]})
    if len(config) > MAX_ACTIONS:
        raise ValidationError({"action_config": [f"holds {len(config)} actions; the limit is {MAX_ACTIONS}"]})

    problems: list[tuple[int, str]] = []
    by_kind: dict[str, list[tuple[int, dict]]] = {}
    for index, action in enumerate(config):
        problems.extend((index, problem) for problem in _action_problems(action, where=f"[{index}]"))
        kind = action.get("type") if isinstance(action, dict) else None
        if isinstance(kind, str) and kind in _reference_checks:
            by_kind.setdefault(action["type"], []).append((index, action))
    for kind, actions in by_kind.items():
        problems.extend(_reference_checks[kind](actions))
    if problems:
        # In the order of the actions (a stable sort keeps each action's own order).
        raise ValidationError({"action_config": [message for _, message in sorted(problems, key=lambda p: p[0])]})
    return config


def rule_actions(rule) -> list:
    """A rule's actions as stored; a non-list (written past the API by a SQL client) is none."""
    return rule.action_config if isinstance(rule.action_config, list) else []


def action_shape_problem(action: object) -> str | None:
    """The first problem of one action's shape, without reading the database; None if none.

    For ingest, which must not trust rows a SQL client may have written past the API's validation.
    """
    problems = _action_problems(action, where="")
    return problems[0].lstrip(".:").strip() if problems else None


def _action_problems(action: object, *, where: str) -> list[str]:
    if not isinstance(action, dict):
        return [f"{where}: must be an object with a `type`"]
    kind = action.get("type")
    if kind not in ACTION_TYPES:
        return [f"{where}.type: {kind!r} is not a known action; expected one of {', '.join(ACTION_TYPES)}"]
    problems: list[str] = []
    keys = ACTION_KEYS[kind]
    for key in sorted(keys["required"] - set(action)):
        problems.append(f"{where}.{key}: is required for a {kind} action")
    for key in sorted(set(action) - keys["required"] - keys["optional"]):
        allowed = ", ".join(sorted(keys["required"] | keys["optional"]))
        problems.append(f"{where}.{key}: unknown key for a {kind} action; it takes {allowed}")
    if kind == NOTIFICATION:
        if "template_id" in action and not action_id_valid(action["template_id"]):
            problems.append(f"{where}.template_id: must be the integer id of a notification template")
        if "recipients" in action:
            problems.extend(_recipients_problems(action["recipients"], where=f"{where}.recipients"))
    elif kind == STOP_MACHINE and "machine_id" in action:
        problems.extend(_machine_id_problems(action["machine_id"], where=f"{where}.machine_id"))
    return problems


def action_id_valid(value: object) -> bool:
    """Whether an action's reference (`template_id`) is an id at all: a positive integer."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _machine_id_problems(machine_id: object, *, where: str) -> list[str]:
    if not isinstance(machine_id, str) or not machine_id.strip():
        return [f"{where}: must be a non-empty string, the plant's id of the machine"]
    if len(machine_id) > MACHINE_ID_MAX_LENGTH:
        return [f"{where}: is {len(machine_id)} characters long; the limit is {MACHINE_ID_MAX_LENGTH}"]
    if machine_id != machine_id.strip() or any(not ch.isprintable() for ch in machine_id):
        return [f"{where}: must not start or end with spaces nor hold control characters"]
    return []


def _recipients_problems(recipients: object, *, where: str) -> list[str]:
    # The notifications' own parser, so that what a rule accepts is exactly what its enqueue sends
    # to (bare strings are email addresses here; a loopback or private webhook only where allowed).
    try:
        recipients_parse(
            recipients, allow_bare_email=True, allow_private=settings.IOTHUB_WEBHOOK_ALLOW_PRIVATE, path=where
        )
    except RecipientError as error:
        return [str(error)]
    return []

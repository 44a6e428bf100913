"""The rule comparison: a metric value against a threshold, with one of six operators.

Pure: no models, no database, no settings. Values are compared as `Decimal`, so that a reading of
`15.1` against a threshold stored as `DECIMAL(15,4)` `15.1000` compares exactly as a person reads
it, never through binary floating point.
"""

import math
import operator as _operator
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

# The spec's operators (`rules.operator`), with the symbol a message shows for each.
OPERATORS: dict[str, Callable[[Decimal, Decimal], bool]] = {
    "gt": _operator.gt,
    "lt": _operator.lt,
    "gte": _operator.ge,
    "lte": _operator.le,
    "eq": _operator.eq,
    "neq": _operator.ne,
}
OPERATOR_SYMBOLS: dict[str, str] = {"gt": ">", "lt": "<", "gte": ">=", "lte": "<=", "eq": "=", "neq": "!="}
# The same comparisons in SQL, for scans that filter in the database first (the backtest); a fixed
# table, never built from input.
# What a NULL `rules.cooldown_minutes` means (the spec's column default).
DEFAULT_COOLDOWN_MINUTES = 15
SQL_OPERATORS: dict[str, str] = {"gt": ">", "lt": "<", "gte": ">=", "lte": "<=", "eq": "=", "neq": "<>"}


def metric_decimal(raw: object) -> Decimal | None:
    """A reading's metric value as a `Decimal`, or None when it is not a finite number.

    A JSON float goes through its shortest repr (`16.2` -> `Decimal('16.2')`), which is the number
    the device wrote. Booleans are not numbers here, although Python treats them as integers.
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, float):
        return Decimal(repr(raw)) if math.isfinite(raw) else None
    if isinstance(raw, Decimal):
        return raw if raw.is_finite() else None
    if isinstance(raw, str):
        # Numbers read back from the database as text (the backtest's scan).
        try:
            value = Decimal(raw)
        except InvalidOperation:
            return None
        return value if value.is_finite() else None
    return None


def condition_matches(*, operator: str, value: Decimal, threshold: Decimal) -> bool:
    """Whether `value <operator> threshold` holds. An unknown operator is a programming error."""
    try:
        compare = OPERATORS[operator]
    except KeyError:
        raise ValueError(f"unknown operator {operator!r}; expected one of {', '.join(OPERATORS)}") from None
    return compare(value, threshold)


# Relative distance from the threshold beyond which comparing binary floats certainly gives the
# answer comparing the decimals gives. (For a threshold of at most 15 significant digits, as
# DECIMAL(15,4) holds, the two never differ at all; the margin guards any other.)
_FLOAT_MARGIN = 1e-12


def reading_matcher(*, operator: str, threshold: Decimal) -> Callable[[object], bool]:
    """`reading_matches` for one operator and threshold, with what it works out once worked out
    once: for a rule checked against every reading of a batch."""
    try:
        compare = OPERATORS[operator]
    except KeyError:
        raise ValueError(f"unknown operator {operator!r}; expected one of {', '.join(OPERATORS)}") from None
    limit = float(threshold)
    margin = _FLOAT_MARGIN * max(abs(limit), 1.0)

    def matches(raw: object) -> bool:
        if type(raw) is float and abs(raw - limit) > margin + _FLOAT_MARGIN * abs(raw):
            return compare(raw, limit)
        return reading_matches(operator=operator, raw=raw, threshold=threshold)

    return matches


def reading_matches(*, operator: str, raw: object, threshold: Decimal) -> bool:
    """Whether a reading's raw JSON value satisfies the condition: `metric_decimal` then
    `condition_matches`, the same answer, but without building a Decimal for a float reading far
    from the threshold (most readings of a batch), where comparing floats cannot differ. False for
    a value that is not a finite number."""
    if type(raw) is float and math.isfinite(raw):
        limit = float(threshold)
        if abs(raw - limit) > _FLOAT_MARGIN * max(abs(raw), abs(limit), 1.0):
            try:
                return OPERATORS[operator](raw, limit)
            except KeyError:
                raise ValueError(f"unknown operator {operator!r}; expected one of {', '.join(OPERATORS)}") from None
    value = metric_decimal(raw)
    return value is not None and condition_matches(operator=operator, value=value, threshold=threshold)


def decimal_text(value: Decimal) -> str:
    """A decimal as a person writes it: `Decimal('15.0000')` -> `15`, `Decimal('16.20')` -> `16.2`,
    never in exponent notation (`Decimal('100').normalize()` alone would give `1E+2`)."""
    text = format(value.normalize(), "f")
    return "0" if text in {"-0", ""} else text


def cooldown_blocks(*, last_triggered_at: datetime | None, cooldown_minutes: int | None, at: datetime) -> bool:
    """Whether a rule last triggered at `last_triggered_at` is still cooling down for a reading
    taken at `at` (a NULL cooldown reads as the default, 15 minutes).

    The same test the cooldown claim makes in the database. `last_triggered_at` only ever moves
    forward, so a copy read earlier in the request can only say "not blocked" too often, never
    too rarely: when it says blocked, the claim would fail, and its round trip can be saved.
    """
    if last_triggered_at is None:
        return False
    minutes = DEFAULT_COOLDOWN_MINUTES if cooldown_minutes is None else cooldown_minutes
    return last_triggered_at > at - timedelta(minutes=minutes)

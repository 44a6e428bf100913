"""The pure rule comparison: no database, no models."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from iothub.rules.conditions import (
    OPERATORS,
    condition_matches,
    cooldown_blocks,
    decimal_text,
    metric_decimal,
    reading_matcher,
    reading_matches,
)
from iothub.rules.models import Operator

T = Decimal("15")

# (operator, value just above, at, just below the threshold) -> expected results.
CASES = {
    "gt": (True, False, False),
    "gte": (True, True, False),
    "lt": (False, False, True),
    "lte": (False, True, True),
    "eq": (False, True, False),
    "neq": (True, False, True),
}


def test_the_operators_are_the_models_choices():
    # Every choice but `nodata`, which compares nothing: the worker judges silence.
    assert set(OPERATORS) == set(Operator.values) - {Operator.NODATA}


@pytest.mark.parametrize("operator", sorted(CASES))
def test_each_operator_on_both_sides_of_its_threshold(operator):
    above, at, below = CASES[operator]
    assert condition_matches(operator=operator, value=Decimal("15.0001"), threshold=T) is above
    assert condition_matches(operator=operator, value=Decimal("15"), threshold=T) is at
    assert condition_matches(operator=operator, value=Decimal("14.9999"), threshold=T) is below


def test_a_float_reading_equals_a_decimal_threshold_as_written():
    # 0.1 as a binary float is 0.1000000000000000055..., which a float comparison would call > 0.1.
    assert condition_matches(operator="eq", value=metric_decimal(0.1), threshold=Decimal("0.1000"))
    assert not condition_matches(operator="gt", value=metric_decimal(0.1), threshold=Decimal("0.1"))


def test_an_unknown_operator_is_an_error():
    with pytest.raises(ValueError, match="unknown operator 'between'"):
        condition_matches(operator="between", value=Decimal(1), threshold=T)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (16.2, Decimal("16.2")),
        (16, Decimal("16")),
        (-3, Decimal("-3")),
        ("42.5", Decimal("42.5")),
        (Decimal("1.5"), Decimal("1.5")),
    ],
)
def test_metric_values_read_as_the_decimal_the_device_wrote(raw, expected):
    assert metric_decimal(raw) == expected


@pytest.mark.parametrize("raw", [None, True, False, float("nan"), float("inf"), "abc", "NaN", [1], {"v": 1}])
def test_non_numbers_are_not_evaluated(raw):
    assert metric_decimal(raw) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [("15.0000", "15"), ("16.20", "16.2"), ("100", "100"), ("0.0001", "0.0001"), ("-0.0", "0"), ("1E+3", "1000")],
)
def test_decimal_text_reads_as_a_person_writes(value, text):
    assert decimal_text(Decimal(value)) == text


# --- The cooldown test, as the claim makes it ---------------------------------------------------

T0 = datetime(2025, 1, 21, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last", "cooldown", "at", "blocked"),
    [
        (None, 15, T0, False),  # never triggered
        (T0, 15, T0 + timedelta(minutes=14, seconds=59), True),
        (T0, 15, T0 + timedelta(minutes=15), False),  # the claim's `<=`: exactly the cooldown later
        (T0, 0, T0, False),  # no cooldown
        (T0, None, T0 + timedelta(minutes=14), True),  # NULL reads as 15 minutes
        (T0, None, T0 + timedelta(minutes=15), False),
        (T0, 15, T0 - timedelta(minutes=1), True),  # a reading older than the last trigger
    ],
)
def test_cooldown_blocks_as_the_claim_does(last, cooldown, at, blocked):
    assert cooldown_blocks(last_triggered_at=last, cooldown_minutes=cooldown, at=at) is blocked


# --- The fast comparison of raw readings ---------------------------------------------------------

thresholds = st.decimals(min_value=-(10**10), max_value=10**10, places=4, allow_nan=False, allow_infinity=False)


def nearby_floats(threshold):
    """Floats at, around and far from the threshold, where the fast path and the exact one meet."""
    as_float = float(threshold)
    return st.one_of(
        st.just(as_float),
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=as_float - 1e-6, max_value=as_float + 1e-6),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
    )


@given(st.sampled_from(sorted(OPERATORS)), thresholds.flatmap(lambda t: st.tuples(st.just(t), nearby_floats(t))))
@example("gt", (Decimal("15.1"), 15.1))
@example("eq", (Decimal("0.1"), 0.1))
@example("gte", (Decimal("16.2"), 16.200000000000003))
def test_the_fast_comparison_of_a_raw_reading_is_the_exact_one(operator, threshold_and_raw):
    threshold, raw = threshold_and_raw
    exact = condition_matches(operator=operator, value=metric_decimal(raw), threshold=threshold)
    assert reading_matches(operator=operator, raw=raw, threshold=threshold) == exact
    assert reading_matcher(operator=operator, threshold=threshold)(raw) == exact


@pytest.mark.parametrize("raw", [None, True, [16], float("nan"), float("inf")])
def test_a_raw_reading_that_is_not_a_finite_number_matches_nothing(raw):
    assert reading_matches(operator="neq", raw=raw, threshold=Decimal("1")) is False

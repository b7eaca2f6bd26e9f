"""The configuration predicates every constructor shares: numbers, bounds, and the raise."""

from __future__ import annotations

import math

import pytest

from asgi_perf._checks import ERR_REGISTRY, check, is_finite, is_int_at_least, is_positive


@pytest.mark.parametrize(
    ("value", "finite", "unbounded"),
    [
        (1, True, True),
        (0.25, True, True),
        (0, False, False),
        (-1, False, False),
        (True, False, False),
        (math.inf, False, True),
        (math.nan, False, False),
        ("1", False, False),
        (None, False, False),
    ],
)
def test_is_positive(value: object, finite: bool, unbounded: bool) -> None:
    """A positive number, never a bool, a string or NaN; infinity only when asked for."""
    assert is_positive(value) is finite
    assert is_positive(value, finite=False) is unbounded


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, True), (-2.5, True), (math.inf, False), (math.nan, False), (False, False)],
)
def test_is_finite(value: object, expected: bool) -> None:
    """Finite numbers pass; infinities, NaN and bools do not."""
    assert is_finite(value) is expected


@pytest.mark.parametrize(
    ("value", "minimum", "expected"),
    [(1, 1, True), (0, 1, False), (2, 2, True), (1.0, 1, False), (True, 1, False), ("3", 1, False)],
)
def test_is_int_at_least(value: object, minimum: int, expected: bool) -> None:
    """Only real ints (not bools, not floats) at or above the minimum."""
    assert is_int_at_least(value, minimum) is expected


def test_check_raises_the_formatted_message() -> None:
    """check() passes silently when the condition holds and raises ValueError with the message
    formatted with the offending values when it does not."""
    check(True, ERR_REGISTRY, None)
    with pytest.raises(ValueError, match=r"^registry must be a PerfRegistry, got 'x'$"):
        check(False, ERR_REGISTRY, "x")

"""Configuration checks: the predicates every constructor uses, and the messages they share.

Bad configuration fails loudly at construction with a plain ``ValueError`` (never ``assert``,
which ``-O`` strips). Each module keeps the messages that name its own parameters, as ``ERR_*``
constants the tests import; what several modules say alike lives here.
"""

from __future__ import annotations

import math
from typing import TypeGuard

#: Every integration that takes ``registry=`` says this about anything but a PerfRegistry.
ERR_REGISTRY = "registry must be a PerfRegistry, got {!r}"


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or float, not a bool (``True`` is an int to Python, never a setting here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite(value: object) -> bool:
    """A number that is neither infinite nor NaN."""
    return is_number(value) and math.isfinite(value)


def is_positive(value: object, *, finite: bool = True) -> bool:
    """A number > 0 (NaN never is); infinity only with ``finite=False``."""
    if not is_number(value):
        return False
    return value > 0 and (not finite or math.isfinite(value))


def is_int_at_least(value: object, minimum: int) -> bool:
    """An int (not a bool) >= ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check(ok: bool, message: str, *values: object) -> None:
    """``ValueError(message.format(*values))`` unless ``ok``."""
    if not ok:
        raise ValueError(message.format(*values))


__all__ = ["ERR_REGISTRY", "check", "is_finite", "is_int_at_least", "is_number", "is_positive"]

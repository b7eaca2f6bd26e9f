"""Helpers shared by the operations-layer tests."""

from __future__ import annotations

import re
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints, is_typeddict


def exact(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern matching exactly ``message``."""
    return f"^{re.escape(message)}$"


def mismatches(value: Any, expected: Any, path: str = "summary") -> list[str]:
    """Where ``value`` departs from the type ``expected`` (a TypedDict of the summary schema, or
    one of the plain types inside it): missing or extra keys, wrong value types. Empty if none."""
    if expected is Any:
        return []
    if is_typeddict(expected):
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, not a {expected.__name__}"]
        hints = get_type_hints(expected)
        found = [f"{path}: missing {key}" for key in expected.__required_keys__ - set(value)]
        found += [f"{path}: unexpected {key}" for key in set(value) - set(hints)]
        for key in set(value) & set(hints):
            found += mismatches(value[key], hints[key], f"{path}.{key}")
        return found
    origin, args = get_origin(expected), get_args(expected)
    if origin in (Union, UnionType):
        if any(not mismatches(value, arg, path) for arg in args):
            return []
        return [f"{path}: {value!r} is none of {expected}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__}, not a list"]
        return [
            m for i, item in enumerate(value) for m in mismatches(item, args[0], f"{path}[{i}]")
        ]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, not a dict"]
        found = []
        for key, item in value.items():
            found += mismatches(key, args[0], f"{path} key {key!r}")
            found += mismatches(item, args[1], f"{path}[{key!r}]")
        return found
    if origin is tuple:
        ok = isinstance(value, tuple) and all(isinstance(v, args[0]) for v in value)
        return [] if ok else [f"{path}: {value!r} is not a {expected}"]
    if expected is type(None):
        return [] if value is None else [f"{path}: {value!r} is not None"]
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    return [] if ok else [f"{path}: {value!r} is not a {expected.__name__}"]

"""Keys and values of the Redis tier: stable key strings, glob escaping, serializers.

A cache key is a ``str`` (used verbatim) or a tuple of ``str``/``int`` parts (``bool`` included,
as ``True``/``False``) joined with ``:``;
inside a tuple part ``\\`` and ``:`` are escaped, so ``("a:b",)`` and ``("a", "b")`` stay apart,
while ``("user", 42)``, ``("user", "42")`` and ``"user:42"`` are deliberately the same key. The
local tier is keyed by the same string, so an invalidation message names local and Redis entries
alike.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol, runtime_checkable

#: One cache key: a string, or a tuple of string / integer parts.
Key = str | tuple[str | int, ...]

ERR_KEY_TYPE = "a tiered cache key must be a str or a tuple of str/int parts, got a {}"

_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "\\*?[]"})


def _part(part: object) -> str:
    if isinstance(part, str):
        if "\\" in part or ":" in part:
            return part.replace("\\", "\\\\").replace(":", "\\:")
        return part
    if isinstance(part, int):  # bool included: "True" / "False"
        return str(part)
    raise ValueError(ERR_KEY_TYPE.format(type(part).__name__))


def encode_key(key: object) -> str:
    """The stable string for ``key``; ``ValueError`` for any other type (a caller bug)."""
    if isinstance(key, str):
        return key
    if isinstance(key, tuple):
        return ":".join([_part(p) for p in key])
    raise ValueError(ERR_KEY_TYPE.format(type(key).__name__))


def encode_prefix(prefix: object) -> str:
    """The string prefix matching ``prefix``: a str as is; a tuple's key followed by ``:``.

    So ``("user",)`` matches ``("user", 1)`` but not ``("username", 1)``.
    """
    if isinstance(prefix, tuple) and prefix:
        return encode_key(prefix) + ":"
    return encode_key(prefix)


def glob_escape(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped, for ``SCAN MATCH``."""
    return text.translate(_GLOB_SPECIAL)


@runtime_checkable
class Serializer(Protocol):
    """How values are turned into the bytes stored in Redis, and back."""

    def dumps(self, value: Any) -> bytes:
        """The bytes for ``value``; raise (any ``Exception``) if it cannot be serialized."""
        ...

    def loads(self, data: bytes) -> Any:
        """The value ``data`` holds; raise if it is not a valid encoding."""
        ...


class JsonSerializer:
    """JSON (UTF-8, compact). The default, and safe to read from a Redis others can write to.

    JSON round trips change some types: tuples come back as lists, dict keys as strings; a
    ``float('nan')``, a ``set`` or an object without a JSON form cannot be stored (the value is
    still returned to the caller, just not shared through Redis).
    """

    def dumps(self, value: Any) -> bytes:
        return json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class PickleSerializer:
    """pickle: any picklable value, exact types. **Unsafe unless you trust everyone who can
    write to this Redis**: unpickling attacker-controlled bytes runs attacker-chosen code.

    Only used when passed explicitly as ``serializer=PickleSerializer()``.
    """

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=self.protocol)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)  # noqa: S301 - an explicit opt-in, documented as unsafe


__all__ = [
    "ERR_KEY_TYPE",
    "JsonSerializer",
    "Key",
    "PickleSerializer",
    "Serializer",
    "encode_key",
    "encode_prefix",
    "glob_escape",
]

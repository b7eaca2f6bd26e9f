"""Bounded labels: method sanitising, status labels, per-metric series caps, name limiters.

A client must never be able to grow the metric set. Everything here maps arbitrary input onto a
bounded set of label values, and every cap folds the excess into one overflow value that is counted
in ``asgi_perf_series_overflow_total``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

#: Label value for requests no route matched (404, 405, slash redirects): never the raw path.
UNMATCHED = "__unmatched__"
#: Label value that takes the excess once a metric reaches its series cap.
OVERFLOW = "__overflow__"
#: Label value for names outside an allow-list or past a name limiter's first N.
OTHER = "__other__"
#: Method label for anything outside the standard methods.
OTHER_METHOD = "OTHER"

STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

#: ``str -> label``: the standard methods map to themselves, anything else (looked up with
#: ``.get(method, OTHER_METHOD)``) to ``OTHER``. A dict lookup is cheaper than a set test + branch.
METHOD_LABELS: dict[object, str] = {m: m for m in STANDARD_METHODS}

#: ``int -> label`` for every three-digit status; anything else becomes ``"other"``.
STATUS_LABELS: dict[object, str] = {code: str(code) for code in range(100, 1000)}
#: ``int -> class label`` (``"2xx"``) when status grouping is on.
STATUS_CLASS_LABELS: dict[object, str] = {code: f"{code // 100}xx" for code in range(100, 1000)}
OTHER_STATUS = "other"
#: Longest name a NameLimiter admits as a label value.
MAX_NAME_LENGTH = 120

T = TypeVar("T")


class NameLimiter:
    """Maps open-ended names (event names, timer names) onto a bounded set.

    With ``allow`` given, only those names pass; otherwise the first ``max_names`` distinct names
    seen pass and later ones become ``OTHER``. Names longer than ``max_length`` characters (or not
    strings) never pass: a label value must not be an attacker's kilobyte. Thread-safe; the pass
    path is one dict lookup.
    """

    def __init__(
        self,
        *,
        allow: Iterable[str] | None = None,
        max_names: int = 100,
        max_length: int = MAX_NAME_LENGTH,
    ) -> None:
        if max_names < 1:
            raise ValueError(f"max_names must be >= 1, got {max_names!r}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length!r}")
        self._max_length = max_length
        self._fixed = allow is not None
        self._known: dict[str, str] = {name: name for name in allow} if allow is not None else {}
        self._max = max_names
        self._lock = threading.Lock()

    def __call__(self, name: str) -> str:
        label = self._known.get(name)
        if label is not None:
            return label
        if self._fixed:
            return OTHER
        with self._lock:
            if (
                len(self._known) < self._max
                and isinstance(name, str)
                and len(name) <= self._max_length
            ):
                self._known[name] = name
                return name
        return OTHER

    def __len__(self) -> int:
        return len(self._known)


class SeriesCap(Generic[T]):
    """A dict of per-label-tuple children with a hard cap.

    ``get(key)`` returns the child for ``key``, creating it with ``factory`` while fewer than
    ``limit`` exist; past the cap, every new key shares one overflow child (built for
    ``overflow_key``) and ``on_overflow`` is called so the excess is counted, not hidden.
    """

    def __init__(
        self,
        factory: Callable[[tuple[str, ...]], T],
        *,
        limit: int,
        overflow_key: tuple[str, ...],
        on_overflow: Callable[[], None],
    ) -> None:
        self._factory = factory
        self._limit = limit
        self._overflow_key = overflow_key
        self._on_overflow = on_overflow
        self._children: dict[tuple[str, ...], T] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> T:
        child = self._children.get(key)
        if child is not None:
            return child
        with self._lock:
            child = self._children.get(key)
            if child is not None:
                return child
            if len(self._children) >= self._limit:
                self._on_overflow()
                key = self._overflow_key
                child = self._children.get(key)
                if child is not None:
                    return child
            child = self._factory(key)
            self._children[key] = child
            return child

    def __len__(self) -> int:
        return len(self._children)

    def items(self) -> list[tuple[tuple[str, ...], T]]:
        return list(self._children.items())

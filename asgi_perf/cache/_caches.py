"""Metered caches on cachetools, and ``cached`` for ``def`` and ``async def`` functions.

``LRUCache``, ``LFUCache``, ``TTLCache`` and ``TLRUCache`` are cachetools' own classes with counting
hooked into their extension points, so they behave exactly like cachetools' and count hits, misses,
evictions by reason (``capacity``, ``expired``, ``explicit``) and rejected values as plain ints. One
collector per registry exports every cache at scrape time. Requires the ``cachetools`` extra.

Thread-safety: like cachetools, the caches themselves are not thread-safe. Give a cache
``lock=threading.RLock()`` when threads share it: ``cached`` and the scrape then take that lock for
you; direct mapping use (``cache[k]``, ``get``, ``del``, ``clear``, ``invalidate_where``) must hold
``with cache.lock:`` itself. Without a lock the scrape reads only GIL-atomic values and never
mutates the cache, so an ``asyncio`` app on one event loop needs no lock at all.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import cachetools

from .._checks import ERR_REGISTRY, check, is_number, is_positive
from ..registry import PerfRegistry
from ._base import (
    _MISSING,
    ERR_MAXSIZE,
    ERR_NAME,
    KT,
    MAX_NAME_LENGTH,
    VT,
    Lock,
    MeteredCache,
    check_lock,
)
from ._collector import COMPONENT_KEY, CacheSet

ERR_TTL = "ttl must be a positive number of seconds, got {!r}"
ERR_JITTER = "jitter must be a number in [0, 1), got {!r}"
ERR_TTU = "ttu must be callable as ttu(key, value, now) -> expiry time, got {!r}"


def _check_maxsize(maxsize: object) -> None:
    if (
        not isinstance(maxsize, (int, float))
        or isinstance(maxsize, bool)
        or not maxsize >= 1  # also rejects nan
    ):
        raise ValueError(ERR_MAXSIZE.format(maxsize))


def _setup(cache: MeteredCache[Any, Any], name: str, registry: PerfRegistry, lock: object) -> None:
    """Validate the metering options and attach the cache to ``registry`` (last: fully built)."""
    cache._meter_init(name, registry, check_lock(lock))
    members = caches(registry)
    members.add(cache)
    if members.shared is not None:
        # Multi-worker mode, decided once: counts go to this worker's shared-memory file.
        cache._share(members.shared)


def _check_common(name: object, registry: object, maxsize: object) -> None:
    # Before cachetools' __init__, so a bad argument never leaves a half-registered cache.
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(ERR_NAME.format(name))
    if not isinstance(registry, PerfRegistry):
        raise ValueError(ERR_REGISTRY.format(registry))
    _check_maxsize(maxsize)


def caches(registry: PerfRegistry) -> CacheSet:
    """The registry's set of caches (created on first use), keyed by cache name."""
    return registry.component(COMPONENT_KEY, lambda: CacheSet(registry))


_lru_getitem = cachetools.LRUCache.__getitem__
_lfu_getitem = cachetools.LFUCache.__getitem__
_tlru_getitem = cachetools.TLRUCache.__getitem__


class LRUCache(MeteredCache[KT, VT], cachetools.LRUCache[KT, VT]):
    """cachetools' ``LRUCache``, counted and exported as ``name`` in ``registry``.

    :param maxsize: capacity (in entries, or in ``getsizeof`` units).
    :param name: the ``cache`` label value; unique per registry.
    :param registry: the :class:`~asgi_perf.PerfRegistry` to export into.
    :param lock: optional ``threading.Lock``/``RLock`` shared by ``cached``, the scrape and you.
    :param getsizeof: as in cachetools: the size of a value (default 1 per entry).
    """

    def __init__(
        self,
        maxsize: float,
        *,
        name: str,
        registry: PerfRegistry,
        lock: Lock | None = None,
        getsizeof: Callable[[VT], float] | None = None,
    ) -> None:
        _check_common(name, registry, maxsize)
        cachetools.LRUCache.__init__(self, maxsize, getsizeof)
        _setup(self, name, registry, lock)

    # Defined per class (not with super()) because this is the hit path: one direct call.
    def __getitem__(self, key: KT) -> VT:
        value = _lru_getitem(self, key)
        self._hits += 1
        return value


class LFUCache(MeteredCache[KT, VT], cachetools.LFUCache[KT, VT]):
    """cachetools' ``LFUCache``, counted and exported (parameters as :class:`LRUCache`)."""

    def __init__(
        self,
        maxsize: float,
        *,
        name: str,
        registry: PerfRegistry,
        lock: Lock | None = None,
        getsizeof: Callable[[VT], float] | None = None,
    ) -> None:
        _check_common(name, registry, maxsize)
        cachetools.LFUCache.__init__(self, maxsize, getsizeof)
        _setup(self, name, registry, lock)

    def __getitem__(self, key: KT) -> VT:
        value = _lfu_getitem(self, key)
        self._hits += 1
        return value


class TLRUCache(MeteredCache[KT, VT], cachetools.TLRUCache[KT, VT]):
    """cachetools' ``TLRUCache`` (per-entry expiry from ``ttu(key, value, now)``), counted.

    Expired entries are counted as ``expired`` evictions when cachetools drops them (on the next
    store, on ``len()``, or at scrape time when the cache has a lock).
    """

    def __init__(
        self,
        maxsize: float,
        ttu: Callable[[KT, VT, float], float],
        *,
        name: str,
        registry: PerfRegistry,
        lock: Lock | None = None,
        timer: Callable[[], float] = time.monotonic,
        getsizeof: Callable[[VT], float] | None = None,
    ) -> None:
        _check_common(name, registry, maxsize)
        if not callable(ttu):
            raise ValueError(ERR_TTU.format(ttu))
        cachetools.TLRUCache.__init__(self, maxsize, ttu, timer, getsizeof)
        _setup(self, name, registry, lock)

    def __getitem__(self, key: KT) -> VT:
        value = _tlru_getitem(self, key)
        self._hits += 1
        return value

    # cachetools freezes its timer across the "in" test and the read in these three, so an entry
    # cannot expire between them; keep that guarantee around our counting versions.
    def get(self, key: KT, default: Any = None) -> Any:
        with self.timer:
            return MeteredCache.get(self, key, default)

    def setdefault(self, key: KT, default: Any = None) -> Any:
        with self.timer:
            return MeteredCache.setdefault(self, key, default)

    def pop(self, key: KT, default: Any = _MISSING) -> Any:
        with self.timer:
            return MeteredCache.pop(self, key, default)

    def expire(self, time: float | None = None) -> list[tuple[KT, VT]]:
        """Drop expired entries (counted as ``expired``) and return them, as cachetools does."""
        expired = super().expire(time)
        if expired:
            self._expired += len(expired)
        return expired

    def _purge(self) -> None:
        self.expire()


class TTLCache(TLRUCache[KT, VT]):
    """A time-to-live LRU cache with optional jitter, counted and exported.

    Built on cachetools' ``TLRUCache`` so every entry carries its own expiry: with ``jitter=0.1``
    each entry lives between 90% and 100% of ``ttl`` (never longer), so entries loaded together do
    not all expire together. Pass ``rng=random.Random(seed)`` for a reproducible spread.

    :param ttl: seconds an entry lives after it was stored.
    :param jitter: fraction of ``ttl`` an entry's life may be shortened by, in ``[0, 1)``.
    :param rng: the random source for the jitter.
    :param timer: the clock (``time.monotonic``); tests pass a fake one.
    """

    def __init__(
        self,
        maxsize: float,
        ttl: float,
        *,
        name: str,
        registry: PerfRegistry,
        lock: Lock | None = None,
        jitter: float = 0.0,
        rng: random.Random | None = None,
        timer: Callable[[], float] = time.monotonic,
        getsizeof: Callable[[VT], float] | None = None,
    ) -> None:
        check(is_positive(ttl, finite=False), ERR_TTL, ttl)
        check(is_number(jitter) and 0 <= jitter < 1, ERR_JITTER, jitter)
        self._ttl = ttl
        self.jitter = jitter
        if jitter:
            draw = (rng or random.Random()).random  # noqa: S311 - spreading expiry, not secrets

            def ttu(_key: KT, _value: VT, now: float) -> float:
                return now + ttl * (1.0 - jitter * draw())

        else:

            def ttu(_key: KT, _value: VT, now: float) -> float:
                return now + ttl

        super().__init__(
            maxsize,
            ttu,
            name=name,
            registry=registry,
            lock=lock,
            timer=timer,
            getsizeof=getsizeof,
        )

    @property
    def ttl(self) -> float:
        """The configured time-to-live in seconds (before jitter)."""
        return self._ttl


__all__ = [
    "ERR_JITTER",
    "ERR_TTL",
    "ERR_TTU",
    "LFUCache",
    "LRUCache",
    "TLRUCache",
    "TTLCache",
    "caches",
]

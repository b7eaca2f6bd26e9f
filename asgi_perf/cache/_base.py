"""The metering layer every asgi-perf cache shares: plain-int counters, stats, invalidation.

Counting happens at the mapping level (``__getitem__``/``__missing__``/``get``), so a lookup through
the decorator and a direct ``cache.get(key)`` are counted alike. Counters are plain ints on the
cache: a hit costs one attribute increment, never a prometheus_client call; the scrape-time
collector (``_cache_collector.CacheSet``) turns them into metric families. In multi-worker mode a
cache is given, at construction, a subclass whose counter attributes are properties over slots of
the worker's shared-memory file (see :meth:`MeteredCache._share`): the counting code is the same.

Eviction reasons are told apart by hooking cachetools' own extension points: ``popitem()`` is what
``__setitem__`` calls when the cache is full (``capacity``), ``expire()`` is what every timed cache
calls to drop dead entries (``expired``), and every other removal is the user's (``explicit``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypedDict, TypeVar

import cachetools

from .._histogram import PlainHistogram
from .._shared import COUNTER, SharedPlainHistogram, SharedStore
from ..catalogue import CATALOGUE

if TYPE_CHECKING:
    from ..registry import PerfRegistry

KT = TypeVar("KT")
VT = TypeVar("VT")

#: Longest accepted cache name (it becomes a label value).
MAX_NAME_LENGTH = 100
#: Registry component key of the per-registry :class:`~asgi_perf.cache.CacheSet`.

ERR_NAME = "cache name must be a non-empty string of at most 100 characters, got {!r}"
ERR_LOCK = "lock must be a threading.Lock or RLock (with acquire() and release()), got {!r}"
ERR_MAXSIZE = "maxsize must be a number >= 1, got {!r}"

_MISSING: Any = object()

# Unbound base-class methods, bound once: they read cachetools' raw storage without the LRU
# reordering, the expiry check or (crucially) our counting.
_raw_getitem = cachetools.Cache.__getitem__
_raw_contains = cachetools.Cache.__contains__
_raw_len = cachetools.Cache.__len__
_raw_iter = cachetools.Cache.__iter__
_raw_currsize = cachetools.Cache.currsize.fget  # type: ignore[attr-defined]


class Lock(Protocol):
    """What ``lock=`` accepts: ``threading.Lock``/``RLock`` (a ``Condition`` is built on it)."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Any: ...


class EvictionStats(TypedDict):
    """Entries removed, by reason."""

    capacity: int
    expired: int
    explicit: int


class CacheStats(TypedDict):
    """A cheap, consistent snapshot of one cache (see :meth:`MeteredCache.stats`)."""

    name: str
    hits: int
    misses: int
    evictions: EvictionStats
    entries: int
    maxsize: float
    currsize: float
    loads: int
    load_seconds: float
    load_errors: int
    coalesced: int
    rejected: int


def check_lock(lock: object) -> Lock | None:
    """``lock`` if it can back a ``threading.Condition``; ``ValueError`` otherwise."""
    if lock is None:
        return None
    if not all(callable(getattr(lock, attr, None)) for attr in ("acquire", "release")):
        raise ValueError(ERR_LOCK.format(lock))
    return lock  # type: ignore[return-value]


#: Each plain-int counter of a cache: its catalogue metric and the label values after the name.
SHARED_COUNTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "_hits": ("cache_requests_total", ("hit",)),
    "_misses": ("cache_requests_total", ("miss",)),
    "_capacity": ("cache_evictions_total", ("capacity",)),
    "_expired": ("cache_evictions_total", ("expired",)),
    "_explicit": ("cache_evictions_total", ("explicit",)),
    "_rejected": ("cache_rejected_total", ()),
    "_load_errors": ("cache_load_errors_total", ()),
    "_coalesced": ("cache_coalesced_total", ()),
}
_shared_classes: dict[type[Any], type[Any]] = {}


class MeteredCache(cachetools.Cache[KT, VT], Generic[KT, VT]):
    """Counting behaviour shared by every asgi-perf cache (mixed in before a cachetools class).

    Not instantiated directly: use :class:`~asgi_perf.cache.LRUCache`,
    :class:`~asgi_perf.cache.LFUCache`, :class:`~asgi_perf.cache.TTLCache` or
    :class:`~asgi_perf.cache.TLRUCache`.
    """

    name: str
    lock: Lock | None
    registry: PerfRegistry

    def _meter_init(self, name: str, registry: PerfRegistry, lock: Lock | None) -> None:
        self.name = name
        self.registry = registry
        self.lock = lock
        self._hits = 0
        self._misses = 0
        self._capacity = 0
        self._expired = 0
        self._explicit = 0
        self._rejected = 0
        self._load_errors = 0
        self._coalesced = 0
        # Bumped by every explicit invalidation: a load that started before it must not store
        # its (possibly stale) value afterwards.
        self._epoch = 0
        self._evicting = False
        self._loads = PlainHistogram(tuple(CATALOGUE["cache_load_duration_seconds"].buckets or ()))

    def _share(self, store: SharedStore) -> None:
        """Multi-worker mode: move every counter and the load histogram into ``store``.

        Called once, at construction, before the cache is handed out. The instance becomes a
        subclass whose counter attributes are properties over shared-memory slots, so the counting
        code is the same in both modes and a single process keeps its plain ints untouched.
        """
        registry = self.registry
        current = {attr: getattr(self, attr) for attr in SHARED_COUNTS}
        slots = []
        for metric, extra in SHARED_COUNTS.values():
            spec = registry.spec(metric)
            family = registry.metric_name(metric).removesuffix("_total")
            labels = list(zip(spec.labels, (self.name, *extra), strict=True))
            slots.append(store.allocate(family, COUNTER, spec.help, labels))
        self._shared_store = store
        self._shared_slots = tuple(slots)
        self.__class__ = _shared_class(type(self))
        for attr, value in current.items():
            setattr(self, attr, value)
        spec = registry.spec("cache_load_duration_seconds")
        self._loads = SharedPlainHistogram(
            self._loads.bounds,
            store,
            registry.metric_name(spec.name),
            spec.help,
            [("cache", self.name)],
        )

    # -- lookups -----------------------------------------------------------------------------
    def __missing__(self, key: KT) -> VT:
        self._misses += 1
        raise KeyError(key)

    def get(self, key: KT, default: Any = None) -> Any:
        """``cache[key]`` or ``default``; counted as a hit or a miss."""
        if key in self:
            return self[key]
        self._misses += 1
        return default

    def setdefault(self, key: KT, default: Any = None) -> Any:
        """Counted as a hit when present, else as a miss followed by a store."""
        if key in self:
            return self[key]
        self._misses += 1
        self[key] = default
        return default

    def peek(self, key: KT, default: Any = None) -> Any:
        """The value for ``key`` without counting a lookup or refreshing its recency."""
        if key in self:
            return _raw_getitem(self, key)
        return default

    # -- stores and removals -----------------------------------------------------------------
    def __setitem__(self, key: KT, value: VT) -> None:
        try:
            super().__setitem__(key, value)
        except ValueError:
            self._rejected += 1
            raise

    def __delitem__(self, key: KT) -> None:
        present = _raw_contains(self, key)
        try:
            super().__delitem__(key)
        except KeyError:
            if present:  # timed caches delete a dead entry, then report it as missing
                self._expired += 1
            raise
        if self._evicting:
            self._capacity += 1
        else:
            self._explicit += 1
            self._epoch += 1

    def pop(self, key: KT, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (an explicit eviction, not a lookup)."""
        if key in self:
            value = _raw_getitem(self, key)
            del self[key]
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[KT, VT]:
        """Remove the entry the eviction policy picks (counted as a ``capacity`` eviction)."""
        self._evicting = True
        try:
            return super().popitem()
        finally:
            self._evicting = False

    def clear(self) -> None:
        """Remove every entry (each counted as an ``explicit`` eviction)."""
        self._purge()
        removed = _raw_len(self)
        # cachetools 7.0.0 and 7.0.1 clear through MutableMapping.clear(): one popitem() per
        # entry (and, in timed caches, an expire() per popitem). Those removals are this clear,
        # not capacity evictions or expiries: whatever they counted is put back.
        counted = self._capacity, self._expired
        super().clear()
        self._capacity, self._expired = counted
        self._explicit += removed
        self._epoch += 1

    def discard(self, key: KT) -> bool:
        """Delete ``key`` if present; ``True`` if an entry was removed.

        Also stops a load of any key that is in flight right now from storing its result.
        """
        self._epoch += 1
        try:
            del self[key]
        except KeyError:
            return False
        return True

    def invalidate_where(self, predicate: Callable[[KT], bool]) -> int:
        """Delete every entry whose key satisfies ``predicate``; returns how many were removed."""
        self._epoch += 1
        removed = 0
        for key in [k for k in _raw_iter(self) if predicate(k)]:
            try:
                del self[key]
            except KeyError:
                continue  # already expired: counted as such
            removed += 1
        return removed

    def invalidate_prefix(self, prefix: tuple[Hashable, ...] | str) -> int:
        """Delete entries whose tuple key starts with ``prefix`` (or whose str key does)."""
        if isinstance(prefix, str):
            return self.invalidate_where(lambda k: isinstance(k, str) and k.startswith(prefix))
        size = len(prefix)
        return self.invalidate_where(lambda k: isinstance(k, tuple) and k[:size] == prefix)

    # -- reading -----------------------------------------------------------------------------
    def _purge(self) -> None:
        """Drop expired entries (timed caches only); callers hold the lock if there is one."""

    def stats(self) -> CacheStats:
        """A snapshot of every counter and size, taken under the cache's lock if it has one."""
        return self._export()[0]

    def _export(self) -> tuple[CacheStats, list[tuple[str, float]]]:
        """The snapshot plus the load histogram's cumulative buckets, read together."""
        lock = self.lock
        if lock is None:
            return self._read(purge=False)
        with lock:
            return self._read(purge=True)

    def _read(self, *, purge: bool) -> tuple[CacheStats, list[tuple[str, float]]]:
        # Without a lock another thread may be mutating the cache: read only what is atomic under
        # the GIL (ints, a dict's length) and never expire, which relinks cachetools' structures.
        if purge:
            self._purge()
        buckets, load_sum, loads = self._loads.cumulative()
        stats: CacheStats = {
            "name": self.name,
            "hits": self._hits,
            "misses": self._misses,
            "evictions": {
                "capacity": self._capacity,
                "expired": self._expired,
                "explicit": self._explicit,
            },
            "entries": _raw_len(self),
            "maxsize": self.maxsize,
            "currsize": _raw_currsize(self),
            "loads": loads,
            "load_seconds": load_sum,
            "load_errors": self._load_errors,
            "coalesced": self._coalesced,
            "rejected": self._rejected,
        }
        return stats, buckets


def _shared_count(index: int) -> property:
    def get(cache: Any) -> int:
        return int(cache._shared_store.values[cache._shared_slots[index]])

    def put(cache: Any, value: int) -> None:
        cache._shared_store.values[cache._shared_slots[index]] = value

    return property(get, put)


def _shared_class(cls: type[Any]) -> type[Any]:
    """``cls`` with its counters kept in shared memory (one subclass per cache class)."""
    shared = _shared_classes.get(cls)
    if shared is None:
        namespace: dict[str, Any] = {attr: _shared_count(i) for i, attr in enumerate(SHARED_COUNTS)}
        namespace["__qualname__"] = cls.__qualname__
        namespace["__module__"] = cls.__module__
        shared = _shared_classes[cls] = type(cls.__name__, (cls,), namespace)
    return shared

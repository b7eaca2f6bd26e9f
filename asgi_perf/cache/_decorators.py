"""``cached``: memoize ``def`` and ``async def`` functions in a metered cache, one load per key.

What cachetools' ``cached`` gets wrong and this fixes: on an ``async def`` it caches the coroutine
object (the second await raises ``RuntimeError``); with ``lock=`` alone N threads missing one key
run N loads; two functions sharing a cache with the default key read each other's values. Here the
default key starts with the function's qualified name, sync calls with a lock are single-flight per
key (waiters counted as ``coalesced``), and async calls run each load once in its own task that
every caller awaits through ``asyncio.shield``, so a cancelled caller never cancels the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Hashable, Sized
from time import perf_counter
from typing import Any, NamedTuple, ParamSpec, Protocol, TypeVar, cast, overload

from ._base import Lock, MeteredCache, check_lock
from ._flights import AsyncFlights, Flight, ThreadFlights

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

ERR_NOT_METERED = (
    "cached() needs an asgi_perf.cache cache (LRUCache, LFUCache, TTLCache, TLRUCache), got {!r}"
)
ERR_LOCK_MISMATCH = (
    "lock= differs from the cache's own lock; pass the cache's lock (or none) so the decorator "
    "and the scrape serialise on one lock"
)
ERR_ASYNC_CONDITION = (
    "condition= is for threads: an async function is always single-flight per key, drop it"
)
ERR_GENERATOR = "cannot cache generator function {!r}: a generator can be consumed only once"
ERR_KEY = "key must be callable, got {!r}"


class CacheInfo(NamedTuple):
    """``cache_info()``'s result, field for field as cachetools' and ``functools.lru_cache``'s."""

    hits: int
    misses: int
    maxsize: float
    currsize: float


class Cached(Protocol[P, R_co]):
    """A function wrapped by :func:`cached` (same call signature; the extras below)."""

    cache: MeteredCache[Any, Any]
    cache_key: Callable[..., Hashable]
    cache_lock: Lock | None
    cache_condition: threading.Condition | None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    # Like a function, the wrapper binds as a method when it decorates one.
    @overload
    def __get__(self, obj: None, objtype: type[Any] | None = None) -> Cached[P, R_co]: ...
    @overload
    def __get__(self, obj: object, objtype: type[Any] | None = None) -> Callable[..., R_co]: ...

    def cache_info(self) -> CacheInfo:
        """Hits and misses of this function (with ``info=True``) or of the whole cache."""
        ...

    def cache_clear(self) -> None:
        """Empty the cache (all of it, as cachetools does) and reset ``cache_info``."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the entry these arguments map to; ``True`` if there was one."""
        ...

    def in_flight(self) -> int:
        """Loads running right now (always 0 once every call has returned)."""
        ...


class _KwMark:
    """Separates positional from keyword arguments in default keys."""


def _default_key(func: Callable[..., Any]) -> Callable[..., Hashable]:
    # The qualified name comes first so two functions sharing one cache never collide.
    name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}"

    def key(*args: Hashable, **kwargs: Hashable) -> Hashable:
        if kwargs:
            return (name, *args, _KwMark, *sorted(kwargs.items()))
        return (name, *args)

    return key


class _Info:
    __slots__ = ("hits", "misses")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0


def cached(
    cache: MeteredCache[Any, Any],
    key: Callable[..., Hashable] | None = None,
    lock: Lock | None = None,
    condition: threading.Condition | None = None,
    info: bool = False,
) -> Callable[[Callable[P, R]], Cached[P, R]]:
    """Memoize a ``def`` or ``async def`` function in ``cache`` (knobs as ``cachetools.cached``).

    :param cache: an asgi-perf cache; its hits, misses and loads are counted.
    :param key: ``key(*args, **kwargs) -> hashable``; default: the function's qualified name
        followed by the arguments.
    :param lock: a ``threading.Lock``/``RLock``; default: the cache's ``lock``. With a lock,
        concurrent sync calls missing one key run one load; the others wait for it.
    :param condition: a ``threading.Condition`` on that lock, for waiting (built for you if
        omitted). Not for ``async def`` functions, which are always single-flight.
    :param info: count hits and misses per function for ``cache_info()``.
    """
    if not isinstance(cache, MeteredCache):
        raise ValueError(ERR_NOT_METERED.format(cache))
    if key is not None and not callable(key):
        raise ValueError(ERR_KEY.format(key))
    if lock is None and condition is not None:
        lock = cast("Lock", condition)
    lock = check_lock(lock)
    if cache.lock is not None:
        if lock is None:
            lock = cache.lock
        elif lock is not cache.lock and condition is None:
            raise ValueError(ERR_LOCK_MISMATCH)

    def decorator(func: Callable[P, R]) -> Cached[P, R]:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise ValueError(ERR_GENERATOR.format(func))
        make_key = key or _default_key(func)
        counts = _Info() if info else None
        wrapper: Any
        flights: Sized
        cond = condition
        if inspect.iscoroutinefunction(func):
            if condition is not None:
                raise ValueError(ERR_ASYNC_CONDITION)
            wrapper, flights = _async_wrapper(func, cache, make_key, lock, counts)
        elif lock is None:
            wrapper, flights = _plain_wrapper(func, cache, make_key, counts), {}
        else:
            cond = cond or threading.Condition(lock)  # type: ignore[arg-type]
            wrapper, flights = _locked_wrapper(func, cache, make_key, lock, cond, counts)
        # update_wrapper first, so the function's __dict__ cannot shadow the attributes below.
        functools.update_wrapper(wrapper, func)
        wrapper.cache = cache
        wrapper.cache_key = make_key
        wrapper.cache_lock = lock
        wrapper.cache_condition = cond
        _add_helpers(wrapper, cache, make_key, lock, counts, flights)
        return cast("Cached[P, R]", wrapper)

    return decorator


def _add_helpers(
    wrapper: Any,
    cache: MeteredCache[Any, Any],
    make_key: Callable[..., Hashable],
    lock: Lock | None,
    counts: _Info | None,
    flights: Sized,
) -> None:
    guard: Any = lock if lock is not None else _NoLock()

    def cache_info() -> CacheInfo:
        with guard:
            if counts is not None:
                return CacheInfo(counts.hits, counts.misses, cache.maxsize, cache.currsize)
            return CacheInfo(cache._hits, cache._misses, cache.maxsize, cache.currsize)

    def cache_clear() -> None:
        with guard:
            cache.clear()
            if counts is not None:
                counts.hits = counts.misses = 0

    def invalidate(*args: Hashable, **kwargs: Hashable) -> bool:
        k = make_key(*args, **kwargs)
        with guard:
            return cache.discard(k)

    def in_flight() -> int:
        return len(flights)

    wrapper.cache_info = cache_info
    wrapper.cache_clear = cache_clear
    wrapper.invalidate = invalidate
    wrapper.in_flight = in_flight


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _store(cache: MeteredCache[Any, Any], k: Hashable, value: Any, epoch: int) -> None:
    # An invalidation while the load ran may have targeted this very key: do not store then.
    if cache._epoch == epoch:
        # Larger than maxsize: counted as rejected by the cache, returned uncached.
        with contextlib.suppress(ValueError):
            cache[k] = value


def _plain_wrapper(
    func: Callable[..., Any],
    cache: MeteredCache[Any, Any],
    make_key: Callable[..., Hashable],
    counts: _Info | None,
) -> Callable[..., Any]:
    """No lock: one thread (or one event loop) owns the cache, so nothing can coalesce."""
    loads = cache._loads

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = make_key(*args, **kwargs)
        try:
            value = cache[k]
        except KeyError:
            pass
        else:
            if counts is not None:
                counts.hits += 1
            return value
        if counts is not None:
            counts.misses += 1
        epoch = cache._epoch
        start = perf_counter()
        try:
            value = func(*args, **kwargs)
        except Exception:
            cache._load_errors += 1
            raise
        loads.observe(perf_counter() - start)
        _store(cache, k, value, epoch)
        return value

    return wrapper


def _locked_wrapper(
    func: Callable[..., Any],
    cache: MeteredCache[Any, Any],
    make_key: Callable[..., Hashable],
    lock: Lock,
    cond: threading.Condition,
    counts: _Info | None,
) -> tuple[Callable[..., Any], ThreadFlights[Hashable]]:
    """Threads: every cache access under ``lock``; one load per key, the rest wait on ``cond``."""
    flights: ThreadFlights[Hashable] = ThreadFlights(cache, cond)
    loads = cache._loads

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = make_key(*args, **kwargs)
        with lock:
            try:
                value = cache[k]
            except KeyError:
                pass
            else:
                if counts is not None:
                    counts.hits += 1
                return value
            if counts is not None:
                counts.misses += 1
            flight, mine = flights.claim(k)
            if not mine:
                if flight.error is not None:
                    raise flight.error
                return flight.value
            epoch = cache._epoch
        start = perf_counter()
        try:
            value = func(*args, **kwargs)
        except BaseException as exc:
            with lock:
                if isinstance(exc, Exception):
                    cache._load_errors += 1
                flight.error = exc
                flights.land(k, flight)
            raise
        elapsed = perf_counter() - start
        with lock:
            flight.value = value
            try:
                loads.observe(elapsed)
                _store(cache, k, value, epoch)
            finally:
                flights.land(k, flight)
        return value

    return wrapper, flights


def _async_wrapper(
    func: Callable[..., Awaitable[Any]],
    cache: MeteredCache[Any, Any],
    make_key: Callable[..., Hashable],
    lock: Lock | None,
    counts: _Info | None,
) -> tuple[Callable[..., Any], AsyncFlights[Hashable]]:
    """One load task per key; every caller (the first included) awaits it through a shield."""
    guard: Any = lock if lock is not None else _NoLock()
    flights: AsyncFlights[Hashable] = AsyncFlights(cache, guard)
    loads = cache._loads

    async def load(k: Hashable, epoch: int, args: Any, kwargs: Any, _flight: Flight) -> Any:
        start = perf_counter()
        try:
            value = await func(*args, **kwargs)
        except Exception:
            with guard:
                cache._load_errors += 1
            raise
        elapsed = perf_counter() - start
        with guard:
            loads.observe(elapsed)
            _store(cache, k, value, epoch)
        return value

    def join(k: Hashable, args: Any, kwargs: Any) -> asyncio.Task[Any]:
        """After a miss (under the lock, if any): the key's load task, started if need be."""
        if counts is not None:
            counts.misses += 1
        return flights.join(k, functools.partial(load, k, cache._epoch, args, kwargs))

    # The hit path is spelled out twice so the common lock-free case pays for no "with".
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = make_key(*args, **kwargs)
        if lock is None:
            try:
                value = cache[k]
            except KeyError:
                task = join(k, args, kwargs)
            else:
                if counts is not None:
                    counts.hits += 1
                return value
        else:
            with lock:
                try:
                    value = cache[k]
                except KeyError:
                    task = join(k, args, kwargs)
                else:
                    if counts is not None:
                        counts.hits += 1
                    return value
        return await asyncio.shield(task)

    return wrapper, flights

"""A two-tier cache: a metered local cache in front of Redis, shared by every process.

``get_or_load`` looks in the local tier, then in Redis, then runs the loader, once per key however
many callers miss together. Writes and invalidations reach other processes through Redis pub/sub.
Redis is an optimisation, never a dependency: when it is down or slow the loader answers, the
failure is counted and logged (rate-limited, without keys or values) and no Redis exception ever
reaches the caller; after repeated failures a circuit breaker skips Redis for a while.

Requires the ``redis`` extra (``redis.asyncio``) and the ``cachetools`` one for the local tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from time import perf_counter
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..._checks import ERR_REGISTRY, check, is_int_at_least, is_positive
from ...registry import PerfRegistry
from .._base import MeteredCache
from .._caches import ERR_JITTER, ERR_TTL
from .._flights import AsyncFlights, Flight
from ._codec import (
    JsonSerializer,
    Key,
    Serializer,
    encode_key,
    encode_prefix,
    glob_escape,
)
from ._decorator import TieredCached, cached_tiered
from ._stats import CircuitBreaker, RateLimitedLog, TierStats, tiers
from ._subscriber import Subscriber, channel_name, message
from ._supervisor import Supervisor

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

ERR_LOCAL = (
    "local must be an asgi_perf.cache cache (LRUCache, LFUCache, TTLCache, TLRUCache), got {!r}"
)
ERR_NAMESPACE = "namespace must be 1-100 characters of [A-Za-z0-9_.-] (no ':'), got {!r}"
ERR_CLIENT = "redis must be a redis.asyncio.Redis client, got {!r}"
ERR_DECODE = "the Redis client must not decode responses: build it with decode_responses=False"
ERR_SERIALIZER = "serializer must have dumps(value) -> bytes and loads(bytes), got {!r}"
ERR_TIMEOUT = "timeout must be a positive number of seconds, got {!r}"
ERR_BREAKER = "failure_threshold must be an int >= 1 and reset_after a number > 0, got {!r}, {!r}"
ERR_PING = "ping_interval must be a positive number of seconds, got {!r}"

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
#: ``SCAN ... COUNT`` hint of invalidate_prefix; the keys of each SCAN step go in one UNLINK.
SCAN_COUNT = 1000
#: Errors that mean "Redis is unreachable or slow" and count towards opening the circuit.
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
# What _call returns instead of a reply: the circuit was open, or the command failed.
_SKIPPED: Any = object()
_FAILED: Any = object()


if sys.version_info >= (3, 11):

    async def _within(seconds: float, aw: Awaitable[Any]) -> Any:
        async with asyncio.timeout(seconds):
            return await aw

else:  # pragma: no cover - exercised on 3.10 only

    async def _within(seconds: float, aw: Awaitable[Any]) -> Any:
        return await asyncio.wait_for(aw, seconds)


class TieredCache:
    """A metered local cache in front of Redis; see the module docstring and ``docs/cache.md``.

    :param local: an asgi-perf cache (``TTLCache`` recommended) owned by this tier alone; it
        names the tier (the ``cache`` label) and counts local hits, misses, loads.
    :param redis: a ``redis.asyncio.Redis`` client built with ``decode_responses=False``. Not
        closed by :meth:`aclose`: it is yours.
    :param namespace: Redis keys are ``<namespace>:<key>``; also names the invalidation channel.
    :param ttl: seconds an entry lives in Redis (``SET ... PX``).
    :param registry: where the Redis-tier metrics are exported (default: the local cache's).
    :param serializer: :class:`JsonSerializer` by default; :class:`PickleSerializer` only if you
        trust everyone who can write to this Redis.
    :param jitter: fraction of ``ttl`` a Redis entry's life may be shortened by, in ``[0, 1)``.
    :param timeout: bound on every Redis command (seconds), whatever the client's own timeouts.
    :param failure_threshold: consecutive connection failures or timeouts that open the circuit.
    :param reset_after: seconds the open circuit skips Redis before one call probes it again.
    :param ping_interval: idle seconds after which the subscriber checks its connection.
    :param timer: the breaker's and the log limiter's clock (``time.monotonic``).
    """

    def __init__(
        self,
        local: MeteredCache[str, Any],
        redis: aioredis.Redis,
        *,
        namespace: str,
        ttl: float,
        registry: PerfRegistry | None = None,
        serializer: Serializer | None = None,
        jitter: float = 0.0,
        timeout: float = 0.25,
        failure_threshold: int = 5,
        reset_after: float = 5.0,
        ping_interval: float = 10.0,
        rng: random.Random | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(local, MeteredCache):
            raise ValueError(ERR_LOCAL.format(local))
        if registry is not None and not isinstance(registry, PerfRegistry):
            raise ValueError(ERR_REGISTRY.format(registry))
        if not isinstance(redis, aioredis.Redis):
            raise ValueError(ERR_CLIENT.format(redis))
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError(ERR_DECODE)
        if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
            raise ValueError(ERR_NAMESPACE.format(namespace))
        check(is_positive(ttl, finite=False), ERR_TTL, ttl)
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter < 1:
            raise ValueError(ERR_JITTER.format(jitter))
        serializer = JsonSerializer() if serializer is None else serializer
        if not isinstance(serializer, Serializer) or isinstance(serializer, type):
            raise ValueError(ERR_SERIALIZER.format(serializer))
        check(is_positive(timeout, finite=False), ERR_TIMEOUT, timeout)
        check(
            is_int_at_least(failure_threshold, 1) and is_positive(reset_after, finite=False),
            ERR_BREAKER,
            failure_threshold,
            reset_after,
        )
        check(is_positive(ping_interval, finite=False), ERR_PING, ping_interval)
        self.local = local
        self.redis = redis
        self.namespace = namespace
        self.ttl = ttl
        self.jitter = jitter
        self.serializer = serializer
        self.timeout = timeout
        self.registry = registry if registry is not None else local.registry
        self._rng = rng or random.Random()  # noqa: S311 - spreading expiry, not secrets
        self._prefix = namespace + ":"
        self._origin = uuid.uuid4().hex
        db = redis.connection_pool.connection_kwargs.get("db", 0)
        self._channel = channel_name(db, namespace)
        # One load per key; a load an invalidation matched is stale: stored in neither tier.
        self._loading: AsyncFlights[str] = AsyncFlights(local, self._guard())
        self._breaker = CircuitBreaker(failure_threshold, reset_after, timer)
        self._log = RateLimitedLog(local.name, timer)
        self._ping_interval = ping_interval
        self.stats = TierStats(local.name)
        self.stats.circuit_open = lambda: self._breaker.is_open
        self._subscription = Supervisor(local.name, self.stats, self._log, self._new_subscriber)
        tiers(self.registry).add(self.stats)  # last: fully built

    @property
    def name(self) -> str:
        """The ``cache`` label: the local cache's name."""
        return self.local.name

    # -- reading -------------------------------------------------------------------------------
    async def get_or_load(self, key: Key, loader: Callable[[], Awaitable[Any]]) -> Any:
        """The value for ``key``: local tier, else Redis, else ``await loader()``.

        One load per key at a time in this process: concurrent callers share it, a cancelled
        caller does not cancel it, and a loader exception reaches every waiter uncached. An
        invalidation of the key while it loads detaches the load: its callers get its value,
        which is stored nowhere, and a call made after the invalidation starts a new load.
        Redis failures are never raised here.
        """
        k = encode_key(key)
        local = self.local
        lock = local.lock
        if lock is None:
            try:
                return local[k]
            except KeyError:
                task = self._join(k, loader)
        else:
            with lock:
                try:
                    return local[k]
                except KeyError:
                    task = self._join(k, loader)
        return await asyncio.shield(task)

    def _join(self, k: str, loader: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
        return self._loading.join(k, functools.partial(self._fill, k, loader))

    async def _fill(self, k: str, loader: Callable[[], Awaitable[Any]], flight: Flight) -> Any:
        stats = self.stats
        raw = await self._call("get", self.redis.get, self._prefix + k)
        if raw is _SKIPPED:
            stats.fallbacks["circuit_open"] += 1
        elif raw is _FAILED:
            stats.fallbacks["error"] += 1
        elif raw is None:
            stats.misses += 1
        else:
            try:
                value = self.serializer.loads(raw)
            except Exception as exc:  # noqa: BLE001 - unreadable bytes are a miss, then replaced
                stats.serialization["loads"] += 1
                stats.misses += 1
                self._log.report("reading a value from Redis", exc, detail=False)
            else:
                stats.hits += 1
                self._store_local(k, value, flight)
                return value
        local = self.local
        start = perf_counter()
        try:
            value = await loader()
        except Exception:
            local._load_errors += 1
            raise
        local._loads.observe(perf_counter() - start)
        self._store_local(k, value, flight)
        # Redis was just unreachable: do not wait for a second failure to store the value.
        if raw is not _SKIPPED and raw is not _FAILED and not flight.stale:
            await self._store_remote(k, value)
        return value

    def _store_local(self, k: str, value: Any, flight: Flight | None) -> None:
        # An invalidation of this key while its load ran: do not store the loaded value.
        with self._guard():
            if flight is None or not flight.stale:
                try:  # noqa: SIM105 - on the fill path; suppress() costs an object per call
                    self.local[k] = value
                except ValueError:  # larger than maxsize: counted as rejected by the cache
                    pass

    # -- writing -------------------------------------------------------------------------------
    async def set(self, key: Key, value: Any) -> None:
        """Store ``value`` in both tiers and tell the other processes to drop their copy.

        When the value is not stored in Redis (the serializer refuses it, the SET fails or is
        skipped) it is kept locally only, and the old Redis copy is deleted (best effort) before
        the other processes are told, so they do not read the old value back from Redis.
        """
        k = encode_key(key)
        self._drop_local([k])
        self._store_local(k, value, None)
        if not await self._store_remote(k, value):
            await self._call("delete", self.redis.unlink, self._prefix + k)
        await self._publish(message(self._origin, keys=[k]))

    async def delete(self, key: Key) -> None:
        """Remove ``key`` from both tiers and from the other processes' local tiers."""
        k = encode_key(key)
        self._drop_local([k])
        await self._call("delete", self.redis.unlink, self._prefix + k)
        await self._publish(message(self._origin, keys=[k]))

    async def invalidate_prefix(self, prefix: Key) -> int:
        """Remove every key starting with ``prefix`` from both tiers, here and elsewhere.

        A str prefix matches keys as strings (``"user:"``); a tuple prefix matches whole parts
        (``("user",)`` matches ``("user", 1)`` but not ``("username", 1)``). Redis is walked with
        ``SCAN MATCH`` and keys are removed with ``UNLINK`` in batches, never with ``KEYS``.
        Returns how many Redis keys were removed (fewer if Redis failed part-way).
        """
        p = encode_prefix(prefix)
        self._drop_prefix(p)
        removed = await self._unlink_matching(glob_escape(self._prefix + p) + "*")
        await self._publish(message(self._origin, prefix=p))
        return removed

    async def _unlink_matching(self, match: str) -> int:
        removed = 0
        cursor: Any = 0
        while True:
            reply = await self._call(
                "invalidate_prefix", self.redis.scan, cursor, match=match, count=SCAN_COUNT
            )
            if reply is _SKIPPED or reply is _FAILED:
                return removed
            cursor, found = reply
            count = await self._call("invalidate_prefix", self.redis.unlink, *found) if found else 0
            if count is _SKIPPED or count is _FAILED:
                return removed
            removed += count
            if cursor == 0:
                return removed

    async def _store_remote(self, k: str, value: Any) -> bool:
        """SET the value in Redis: whether Redis accepted it (failures are counted)."""
        try:
            data = self.serializer.dumps(value)
        except Exception as exc:  # noqa: BLE001 - the caller still gets the value
            self.stats.serialization["dumps"] += 1
            self._log.report("serializing a value for Redis", exc, detail=False)
            return False
        ms = self.ttl * 1000.0
        if self.jitter:
            ms *= 1.0 - self.jitter * self._rng.random()
        reply = await self._call("set", self.redis.set, self._prefix + k, data, px=max(1, int(ms)))
        return reply is not _SKIPPED and reply is not _FAILED

    async def _publish(self, payload: bytes) -> None:
        reply = await self._call("publish", self.redis.publish, self._channel, payload)
        if reply is not _SKIPPED and reply is not _FAILED:
            self.stats.invalidations["sent"] += 1

    # -- local tier ----------------------------------------------------------------------------
    # An invalidation drops the local entries it matches and detaches the loads in flight for
    # them, marked stale: their value is stored nowhere, and a later call starts a new load
    # instead of joining one that may have read the data before the write.
    def _guard(self) -> contextlib.AbstractContextManager[Any]:
        lock = self.local.lock
        return lock if lock is not None else contextlib.nullcontext()

    def _drop_local(self, keys: list[str]) -> None:
        with self._guard():
            for k in keys:
                self.local.discard(k)
                self._loading.detach(k)

    def _drop_prefix(self, p: str) -> None:
        with self._guard():
            self.local.invalidate_prefix(p)
            self._loading.detach_where(lambda k: k.startswith(p))

    def _clear_local(self) -> None:
        with self._guard():
            self.local.clear()
            self._loading.detach_where(lambda k: True)

    # -- one Redis command ---------------------------------------------------------------------
    async def _call(
        self, op: str, command: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        """``await command(...)`` within ``timeout``: its reply, or ``_SKIPPED``/``_FAILED``."""
        stats = self.stats
        breaker = self._breaker
        token = breaker.allow()
        if token is None:
            stats.skipped[op] += 1
            return _SKIPPED
        start = perf_counter()
        try:
            reply = await _within(self.timeout, command(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - Redis must never break the caller
            stats.durations[op].observe(perf_counter() - start)
            stats.errors[op] += 1
            if op == "get":
                stats.read_errors += 1
            if isinstance(exc, _DOWN):
                breaker.failure(token)
            else:
                breaker.success(token)  # an error reply: the server is up
            self._log.report(f"Redis {op}", exc)
            return _FAILED
        except BaseException:
            breaker.release(token)
            raise
        stats.durations[op].observe(perf_counter() - start)
        breaker.success(token)
        return reply

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe to the invalidation channel (returns after the first attempt, never raises
        for Redis; a failed attempt is retried in the background with backoff)."""
        await self._subscription.start()

    def _new_subscriber(self) -> Subscriber:
        return Subscriber(
            self.redis,
            self._channel,
            self._origin,
            self.stats,
            self._log,
            bounded=functools.partial(_within, self.timeout),
            on_subscribed=self._clear_local,
            on_keys=self._drop_local,
            on_prefix=self._drop_prefix,
            ping_interval=self._ping_interval,
            rng=self._rng,
        )

    async def aclose(self) -> None:
        """Stop the subscriber. The Redis client is not closed; loads in flight go on.

        A cancellation of the caller while it waits for the subscriber to stop propagates."""
        await self._subscription.stop()

    async def __aenter__(self) -> TieredCache:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- decorator -----------------------------------------------------------------------------
    @overload
    def cached(self, func: Callable[P, Awaitable[R]], /) -> TieredCached[P, R]: ...
    @overload
    def cached(
        self, /, *, key: Callable[..., Key] | None = None
    ) -> Callable[[Callable[P, Awaitable[R]]], TieredCached[P, R]]: ...

    def cached(self, func: Any = None, /, *, key: Callable[..., Key] | None = None) -> Any:
        """``@tier.cached`` or ``@tier.cached(key=...)``: see :func:`cached_tiered`."""
        decorator = cached_tiered(self, key=key)
        return decorator if func is None else decorator(func)


__all__ = [
    "ERR_BREAKER",
    "ERR_CLIENT",
    "ERR_DECODE",
    "ERR_LOCAL",
    "ERR_NAMESPACE",
    "ERR_PING",
    "ERR_SERIALIZER",
    "ERR_TIMEOUT",
    "SCAN_COUNT",
    "TieredCache",
]

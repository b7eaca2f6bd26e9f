"""``cached`` on ``async def``: awaited values cached, single-flight, cancellation, errors."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asgi_perf import PerfRegistry
from asgi_perf.cache import ERR_ASYNC_CONDITION, ERR_GENERATOR, LRUCache, TTLCache, cached

pytestmark = pytest.mark.anyio


async def settle() -> None:
    """Let every ready task and callback run (a few loop iterations)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_wrapper_is_a_coroutine_function_and_caches_the_value(
    registry: PerfRegistry,
) -> None:
    """The wrapper is ``async def``; the awaited result is cached, never the coroutine object."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)
    calls: list[int] = []

    @cached(cache)
    async def fetch(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0)
        return x + 1

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch(1) == 2
    assert await fetch(1) == 2
    assert calls == [1]
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["loads"]) == (1, 1, 1)


async def test_none_result_is_cached(registry: PerfRegistry) -> None:
    """An async loader returning ``None`` runs once; the next await is a hit."""
    cache: LRUCache[Any, int | None] = LRUCache(10, name="c", registry=registry)
    calls: list[int] = []

    @cached(cache, info=True)
    async def fetch(x: int) -> int | None:
        calls.append(x)
        return None

    assert await fetch(1) is None
    assert await fetch(1) is None
    assert calls == [1]
    assert fetch.cache_info().hits == 1
    assert fetch.cache_info().misses == 1


async def test_fifty_concurrent_awaits_run_one_load(registry: PerfRegistry) -> None:
    """50 concurrent awaits of one key run 1 load; 49 are counted as coalesced."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)
    release = asyncio.Event()
    calls: list[int] = []

    @cached(cache)
    async def fetch(x: int) -> int:
        calls.append(x)
        await release.wait()
        return x * 2

    tasks = [asyncio.ensure_future(fetch(21)) for _ in range(50)]
    await settle()
    assert fetch.in_flight() == 1
    release.set()
    assert await asyncio.gather(*tasks) == [42] * 50
    assert calls == [21]
    stats = cache.stats()
    assert (stats["misses"], stats["coalesced"], stats["loads"]) == (50, 49, 1)
    assert fetch.in_flight() == 0


async def test_cancelled_leader_does_not_cancel_the_load(registry: PerfRegistry) -> None:
    """Cancelling the caller that started the load leaves the load running for the others."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)
    release = asyncio.Event()
    calls: list[int] = []

    @cached(cache)
    async def fetch(x: int) -> int:
        calls.append(x)
        await release.wait()
        return x

    leader = asyncio.ensure_future(fetch(5))
    await settle()
    followers = [asyncio.ensure_future(fetch(5)) for _ in range(3)]
    await settle()
    leader.cancel()
    await settle()
    assert leader.cancelled()
    release.set()
    assert await asyncio.gather(*followers) == [5, 5, 5]
    assert calls == [5]
    assert 5 in [k[-1] for k in cache]
    assert fetch.in_flight() == 0


async def test_all_callers_cancelled_still_caches_the_result(registry: PerfRegistry) -> None:
    """If every caller goes away the load still finishes, is cached, and leaves no entry behind."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)
    release = asyncio.Event()

    @cached(cache)
    async def fetch(x: int) -> int:
        await release.wait()
        return x

    caller = asyncio.ensure_future(fetch(9))
    await settle()
    caller.cancel()
    await settle()
    release.set()
    await settle()
    assert fetch.in_flight() == 0
    assert await fetch(9) == 9
    assert cache.stats()["loads"] == 1


async def test_loader_error_reaches_every_waiter_and_is_not_cached(
    registry: PerfRegistry,
) -> None:
    """When the one load raises, every waiter gets the exception and nothing is cached."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)
    release = asyncio.Event()
    attempts: list[int] = []

    @cached(cache)
    async def fetch(x: int) -> int:
        attempts.append(x)
        await release.wait()
        if len(attempts) == 1:
            raise ConnectionError("db down")
        return x

    tasks = [asyncio.ensure_future(fetch(1)) for _ in range(10)]
    await settle()
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert len(cache) == 0
    assert fetch.in_flight() == 0
    assert cache.stats()["load_errors"] == 1
    assert await fetch(1) == 1  # the error was not cached
    assert attempts == [1, 1]


async def test_error_nobody_awaits_is_retrieved(registry: PerfRegistry) -> None:
    """A failed load whose callers were all cancelled does not log 'never retrieved'."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)
    release = asyncio.Event()

    @cached(cache)
    async def fetch(x: int) -> int:
        await release.wait()
        raise ValueError("bad")

    caller = asyncio.ensure_future(fetch(1))
    await settle()
    caller.cancel()
    await settle()
    release.set()
    await settle()
    assert fetch.in_flight() == 0
    assert cache.stats()["load_errors"] == 1


async def test_load_task_cancelled_before_start_leaves_no_entry(registry: PerfRegistry) -> None:
    """A load task cancelled before it ever ran is still removed from the in-flight map."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)

    @cached(cache)
    async def fetch(x: int) -> int:
        return x

    caller = asyncio.ensure_future(fetch(3))
    await asyncio.sleep(0)  # the caller ran: the load task exists but has not started
    assert fetch.in_flight() == 1
    loads = [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__name__", "") == "load"]
    assert len(loads) == 1
    loads[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await settle()
    assert fetch.in_flight() == 0
    assert cache.stats()["load_errors"] == 0
    assert await fetch(3) == 3


async def test_async_with_cache_lock(registry: PerfRegistry) -> None:
    """A cache with a lock is also usable from async code (lock held only around cache access)."""
    cache: TTLCache[Any, int] = TTLCache(10, 60, name="c", registry=registry, lock=threading.Lock())

    @cached(cache, info=True)
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        if x < 0:
            raise ValueError(x)
        return x

    results = await asyncio.gather(fetch(1), fetch(1), fetch(2))
    assert list(results) == [1, 1, 2]
    assert await fetch(1) == 1
    with pytest.raises(ValueError, match="-1"):
        await fetch(-1)
    assert fetch.cache_info() == (1, 4, 10, 2)
    assert fetch.invalidate(1) is True
    fetch.cache_clear()
    assert len(cache) == 0


async def test_flight_of_another_event_loop_is_not_joined(registry: PerfRegistry) -> None:
    """A load in flight on another thread's loop is not awaited here; this loop loads itself."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry, lock=threading.Lock())
    started = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    @cached(cache)
    async def fetch(x: int) -> int:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            started.set()
            await asyncio.to_thread(release.wait)
        return x

    other = threading.Thread(target=lambda: asyncio.run(fetch(1)), name="other")
    other.start()
    await asyncio.to_thread(started.wait)
    assert await fetch(1) == 1
    release.set()
    await asyncio.to_thread(other.join)
    assert calls == ["other", threading.current_thread().name]
    assert fetch.in_flight() == 0


def test_condition_is_refused_for_async(registry: PerfRegistry) -> None:
    """``condition=`` on an async function is a configuration error (it is always single-flight)."""
    lock = threading.Lock()
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)

    async def fetch(x: int) -> int:
        return x

    with pytest.raises(ValueError) as info:  # noqa: PT011 - message compared below
        cached(cache, lock=lock, condition=threading.Condition(lock))(fetch)
    assert str(info.value) == ERR_ASYNC_CONDITION


def test_async_generators_are_refused(registry: PerfRegistry) -> None:
    """An async generator cannot be cached: configuration error."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)

    async def stream() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(ValueError) as info:  # noqa: PT011 - message compared below
        cached(cache)(stream)
    assert str(info.value) == ERR_GENERATOR.format(stream)

"""``cached`` on ``def`` functions: keys, counting, cache_info, errors, single-flight threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import cachetools
import pytest
from cachetools.keys import hashkey

from asgi_perf import PerfRegistry
from asgi_perf.cache import (
    ERR_GENERATOR,
    ERR_KEY,
    ERR_LOCK_MISMATCH,
    ERR_NOT_METERED,
    CacheInfo,
    LRUCache,
    TTLCache,
    cached,
)
from asgi_perf.testing import sample

from .._time import wait_until


def test_loads_once_then_hits(registry: PerfRegistry) -> None:
    """The first call loads and is a miss; repeats are hits; the load is timed."""
    calls: list[int] = []
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)

    @cached(cache)
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    assert [double(2), double(2), double(3), double(2)] == [4, 4, 6, 4]
    assert calls == [2, 3]
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["loads"]) == (2, 2, 2)
    count = sample(registry, "cache_load_duration_seconds", {"cache": "c"}, suffix="_count")
    assert count == 2
    assert getattr(double, "__name__", None) == "double"
    assert getattr(double, "__wrapped__", None) is not None
    assert double.cache is cache


def test_none_result_is_cached_and_counted_as_hit(registry: PerfRegistry) -> None:
    """A function returning ``None`` runs once; the next call is a hit."""
    calls: list[int] = []
    cache: LRUCache[Any, None] = LRUCache(10, name="c", registry=registry)

    @cached(cache)
    def lookup(x: int) -> None:
        calls.append(x)

    assert lookup(1) is None
    assert lookup(1) is None
    assert calls == [1]
    assert cache.stats()["hits"] == 1


def test_functions_sharing_a_cache_never_collide(registry: PerfRegistry) -> None:
    """The default key includes the qualified name: same arguments, different functions."""
    cache: LRUCache[Any, str] = LRUCache(10, name="c", registry=registry)

    @cached(cache)
    def user(x: int) -> str:
        return f"user {x}"

    @cached(cache)
    def team(x: int) -> str:
        return f"team {x}"

    assert (user(1), team(1), user(1), team(1)) == ("user 1", "team 1", "user 1", "team 1")
    assert len(cache) == 2


def test_keyword_order_does_not_matter(registry: PerfRegistry) -> None:
    """Keyword arguments are sorted into the key, and stay apart from positionals."""
    calls: list[tuple[int, int]] = []
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)

    @cached(cache)
    def add(a: int = 0, b: int = 0) -> int:
        calls.append((a, b))
        return a + b

    assert add(a=1, b=2) == add(b=2, a=1) == 3
    assert add(1, 2) == 3
    assert len(calls) == 2


def test_custom_key_is_used_as_given(registry: PerfRegistry) -> None:
    """A ``key=`` function replaces the default key entirely (cachetools' ``hashkey`` works)."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)

    @cached(cache, key=hashkey)
    def ident(x: int) -> int:
        return x

    ident(5)
    assert list(cache) == [(5,)]
    assert ident.cache_key is hashkey


def test_cache_info_per_function_with_info(registry: PerfRegistry) -> None:
    """``info=True``: ``cache_info()`` counts this function's calls, as cachetools does."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)

    @cached(cache, info=True)
    def f(x: int) -> int:
        return x

    @cached(cache)
    def g(x: int) -> int:
        return x

    f(1)
    f(1)
    g(1)
    assert f.cache_info() == CacheInfo(hits=1, misses=1, maxsize=10, currsize=2)
    assert g.cache_info() == CacheInfo(hits=1, misses=2, maxsize=10, currsize=2)
    f.cache_clear()
    assert f.cache_info() == CacheInfo(0, 0, 10, 0)
    g.cache_clear()
    assert len(cache) == 0


def test_load_error_is_counted_and_not_cached(registry: PerfRegistry) -> None:
    """A loader that raises propagates the error, counts a load error and caches nothing."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)
    attempts: list[int] = []

    @cached(cache)
    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 1:
            raise RuntimeError("db down")
        return x

    with pytest.raises(RuntimeError, match="db down"):
        flaky(1)
    assert flaky(1) == 1
    assert sample(registry, "cache_load_errors_total", {"cache": "c"}) == 1
    assert cache.stats()["misses"] == 2


def test_oversized_value_is_returned_but_not_stored(registry: PerfRegistry) -> None:
    """A value larger than maxsize is returned, not cached, and counted as rejected."""
    cache: LRUCache[Any, str] = LRUCache(3, name="c", registry=registry, getsizeof=len)

    @cached(cache)
    def text(n: int) -> str:
        return "x" * n

    assert text(10) == "x" * 10
    assert len(cache) == 0
    assert cache.stats()["rejected"] == 1


def test_invalidate_removes_one_entry(registry: PerfRegistry) -> None:
    """``f.invalidate(args)`` drops exactly the entry those arguments map to."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)

    @cached(cache)
    def f(x: int) -> int:
        return x

    f(1)
    f(2)
    assert f.invalidate(1) is True
    assert f.invalidate(1) is False
    assert len(cache) == 1
    assert cache.stats()["evictions"]["explicit"] == 1


def test_invalidation_during_a_load_prevents_storing_it(registry: PerfRegistry) -> None:
    """A load that overlaps an invalidation returns its value but does not cache stale data."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)
    version = [1]

    @cached(cache)
    def read(x: int) -> int:
        seen = version[0]
        version[0] += 1
        cache.invalidate_prefix(())  # the data changed while we were reading it
        return seen

    assert read(1) == 1
    assert len(cache) == 0
    assert read(1) == 2


def test_methods_can_be_cached(registry: PerfRegistry) -> None:
    """Decorating a method works; ``self`` is part of the key."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry)

    class Repo:
        def __init__(self, base: int) -> None:
            self.base = base

        @cached(cache)
        def get(self, x: int) -> int:
            return self.base + x

    assert Repo(10).get(1) == 11
    assert Repo(20).get(1) == 21


# -- configuration ---------------------------------------------------------------------------


def test_rejects_caches_it_cannot_count(registry: PerfRegistry) -> None:
    """Only asgi-perf caches are accepted: a plain cachetools cache has no counters."""
    plain: cachetools.LRUCache[Any, Any] = cachetools.LRUCache(10)
    with pytest.raises(ValueError) as info:  # noqa: PT011 - message compared below
        cached(plain)  # type: ignore[arg-type]
    assert str(info.value) == ERR_NOT_METERED.format(plain)


def test_rejects_bad_key_and_generators(registry: PerfRegistry) -> None:
    """A non-callable key and generator functions are configuration errors."""
    cache: LRUCache[Any, Any] = LRUCache(10, name="c", registry=registry)
    with pytest.raises(ValueError) as info:  # noqa: PT011 - message compared below
        cached(cache, key="id")  # type: ignore[arg-type]
    assert str(info.value) == ERR_KEY.format("id")

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(ValueError) as info:  # noqa: PT011 - message compared below
        cached(cache)(gen)
    assert str(info.value) == ERR_GENERATOR.format(gen)


def test_lock_must_match_the_caches_lock(registry: PerfRegistry) -> None:
    """A cache with its own lock refuses a different ``lock=`` (the scrape uses the cache's)."""
    own = threading.RLock()
    cache: LRUCache[Any, Any] = LRUCache(10, name="c", registry=registry, lock=own)
    with pytest.raises(ValueError) as info:  # noqa: PT011 - message compared below
        cached(cache, lock=threading.RLock())
    assert str(info.value) == ERR_LOCK_MISMATCH

    @cached(cache, lock=own)
    def f(x: int) -> int:
        return x

    @cached(cache)
    def g(x: int) -> int:
        return x

    assert f.cache_lock is own
    assert g.cache_lock is own
    assert isinstance(g.cache_condition, threading.Condition)


# -- threads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["condition", "lock", "cache-lock"])
def test_stampede_runs_one_load(registry: PerfRegistry, mode: str) -> None:
    """20 threads missing one key run exactly 1 load; 19 wait for it (coalesced) and share it."""
    lock = threading.RLock()
    cache: TTLCache[Any, int] = TTLCache(
        10, 60, name="c", registry=registry, lock=lock if mode == "cache-lock" else None
    )
    choices: dict[str, dict[str, Any]] = {
        "condition": {"condition": threading.Condition(lock)},
        "lock": {"lock": lock},
        "cache-lock": {},
    }
    options = choices[mode]
    release = threading.Event()
    loads: list[int] = []

    @cached(cache, **options)
    def slow(x: int) -> int:
        loads.append(x)
        release.wait()
        return x * 10

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(slow(7))) for _ in range(20)]
    for thread in threads:
        thread.start()
    wait_until(lambda: cache.stats()["coalesced"] == 19, "19 coalesced callers")
    assert slow.in_flight() == 1
    release.set()
    for thread in threads:
        thread.join()
    assert loads == [7]
    assert results == [70] * 20
    stats = cache.stats()
    assert (stats["misses"], stats["coalesced"], stats["loads"]) == (20, 19, 1)
    assert slow(7) == 70
    assert slow.in_flight() == 0


def test_stampede_error_reaches_every_waiter(registry: PerfRegistry) -> None:
    """If the one load raises, every waiting thread gets the error and nothing is cached."""
    lock = threading.Lock()
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry, lock=lock)
    release = threading.Event()

    @cached(cache)
    def broken(x: int) -> int:
        release.wait()
        raise LookupError("no such row")

    errors: list[BaseException] = []

    def call() -> None:
        try:
            broken(1)
        except LookupError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    wait_until(lambda: cache.stats()["coalesced"] == 4, "4 coalesced callers")
    release.set()
    for thread in threads:
        thread.join()
    assert len(errors) == 5
    assert len(cache) == 0
    assert broken.in_flight() == 0
    assert cache.stats()["load_errors"] == 1


def test_locked_interrupt_is_not_a_load_error(registry: PerfRegistry) -> None:
    """A ``BaseException`` from the loader propagates and clears the flight, uncounted."""
    cache: LRUCache[Any, int] = LRUCache(10, name="c", registry=registry, lock=threading.Lock())

    @cached(cache)
    def stop(x: int) -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stop(1)
    assert stop.in_flight() == 0
    assert cache.stats()["load_errors"] == 0


def test_threads_and_scraper_keep_exact_counts(registry: PerfRegistry) -> None:
    """8 threads x 10k mixed calls while a scraper loops: no error, hits + misses == calls."""
    lock = threading.RLock()
    clock = [0.0]
    cache: TTLCache[Any, int] = TTLCache(
        64, 5, name="c", registry=registry, lock=lock, timer=lambda: clock[0]
    )

    @cached(cache)
    def square(x: int) -> int:
        return x * x

    calls_per_thread = 10_000
    failures: list[BaseException] = []
    stop = threading.Event()

    def work(seed: int) -> None:
        try:
            for i in range(calls_per_thread):
                x = (i * 7 + seed) % 100
                if i % 3 == 0:
                    with lock:
                        cache.get(("direct", x))
                        if i % 9 == 0:
                            cache[("direct", x)] = x
                            clock[0] += 0.01
                else:
                    assert square(x) == x * x
        except BaseException as exc:
            failures.append(exc)

    scrapes = [0]

    def scrape() -> None:
        while not stop.is_set():
            try:
                sample(registry, "cache_entries", {"cache": "c"})
                scrapes[0] += 1
            except BaseException as exc:
                failures.append(exc)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    scraper.join()
    assert failures == []
    assert scrapes[0] > 0
    stats = cache.stats()
    assert stats["hits"] + stats["misses"] == 8 * calls_per_thread
    assert stats["entries"] <= 64
    hits = sample(registry, "cache_requests_total", {"cache": "c", "result": "hit"})
    misses = sample(registry, "cache_requests_total", {"cache": "c", "result": "miss"})
    assert hits is not None
    assert misses is not None
    assert hits + misses == 8 * calls_per_thread

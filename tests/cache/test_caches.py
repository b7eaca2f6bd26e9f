"""Metered caches: counting at the mapping level, eviction reasons, invalidation, exposition."""

from __future__ import annotations

import random
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import generate_latest

from asgi_perf import PerfRegistry
from asgi_perf.cache import (
    COMPONENT_KEY,
    ERR_DUPLICATE,
    ERR_JITTER,
    ERR_LOCK,
    ERR_MAXSIZE,
    ERR_NAME,
    ERR_REGISTRY,
    ERR_TOO_MANY,
    ERR_TTL,
    ERR_TTU,
    LFUCache,
    LRUCache,
    TLRUCache,
    TTLCache,
    caches,
)
from asgi_perf.testing import sample, samples

from .._time import FakeClock


def requests(registry: PerfRegistry, cache: str, result: str) -> float | None:
    return sample(registry, "cache_requests_total", {"cache": cache, "result": result})


def evictions(registry: PerfRegistry, cache: str, reason: str) -> float | None:
    return sample(registry, "cache_evictions_total", {"cache": cache, "reason": reason})


# -- lookups ---------------------------------------------------------------------------------


def test_getitem_and_get_count_hits_and_misses(registry: PerfRegistry) -> None:
    """``cache[k]`` and ``cache.get(k)`` both count: a hit when present, a miss when absent."""
    cache: LRUCache[str, int] = LRUCache(10, name="c", registry=registry)
    cache["a"] = 1
    assert cache["a"] == 1
    assert cache.get("a") == 1
    assert cache.get("b", 7) == 7
    with pytest.raises(KeyError):
        cache["b"]
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (2, 2)
    assert requests(registry, "c", "hit") == 2
    assert requests(registry, "c", "miss") == 2


def test_membership_and_peek_are_not_lookups(registry: PerfRegistry) -> None:
    """``in`` and ``peek()`` read without counting (so ``if k in c: c[k]`` counts once)."""
    cache: LRUCache[str, int] = LRUCache(10, name="c", registry=registry)
    cache["a"] = 1
    assert "a" in cache
    assert "b" not in cache
    assert cache.peek("a") == 1
    assert cache.peek("b", 0) == 0
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (0, 0)


def test_peek_does_not_refresh_recency(registry: PerfRegistry) -> None:
    """``peek()`` leaves the LRU order alone, so a peeked entry is still evicted first."""
    cache: LRUCache[str, int] = LRUCache(2, name="c", registry=registry)
    cache["a"] = 1
    cache["b"] = 2
    cache.peek("a")
    cache["c"] = 3
    assert "a" not in cache
    assert "b" in cache


def test_cached_none_is_a_hit(registry: PerfRegistry) -> None:
    """A stored ``None`` is a value: reading it is a hit, unlike caches that treat None as absent."""
    cache: LRUCache[str, None] = LRUCache(10, name="c", registry=registry)
    cache["a"] = None
    assert cache["a"] is None
    assert cache.get("a", "default") is None
    assert cache.stats()["hits"] == 2
    assert cache.stats()["misses"] == 0


def test_setdefault_counts_hit_or_miss(registry: PerfRegistry) -> None:
    """``setdefault`` is a hit when the key is present, else a miss followed by a store."""
    cache: LRUCache[str, int] = LRUCache(10, name="c", registry=registry)
    assert cache.setdefault("a", 1) == 1
    assert cache.setdefault("a", 2) == 1
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (1, 1)


# -- evictions -------------------------------------------------------------------------------


def test_capacity_evictions_are_counted(registry: PerfRegistry) -> None:
    """Entries pushed out by a full cache count as ``capacity``, not ``explicit``."""
    cache: LRUCache[int, int] = LRUCache(3, name="c", registry=registry)
    for i in range(10):
        cache[i] = i
    assert evictions(registry, "c", "capacity") == 7
    assert evictions(registry, "c", "explicit") == 0
    assert list(cache) == [7, 8, 9]


def test_explicit_removals_are_counted(registry: PerfRegistry) -> None:
    """``del``, ``pop``, ``discard`` and ``clear`` count as ``explicit``; pop is not a lookup."""
    cache: LRUCache[int, int] = LRUCache(10, name="c", registry=registry)
    for i in range(6):
        cache[i] = i
    del cache[0]
    assert cache.pop(1) == 1
    assert cache.pop(99, "gone") == "gone"
    with pytest.raises(KeyError):
        cache.pop(99)
    assert cache.discard(2) is True
    assert cache.discard(2) is False
    cache.clear()
    stats = cache.stats()
    assert stats["evictions"] == {"capacity": 0, "expired": 0, "explicit": 6}
    assert (stats["hits"], stats["misses"], stats["entries"]) == (0, 0, 0)


def test_popitem_counts_as_capacity(registry: PerfRegistry) -> None:
    """``popitem()`` removes what the policy picks, counted as a ``capacity`` eviction."""
    cache: LFUCache[str, int] = LFUCache(10, name="c", registry=registry)
    cache["a"] = 1
    cache["b"] = 2
    cache["a"]
    assert cache.popitem() == ("b", 2)
    assert cache.stats()["evictions"]["capacity"] == 1
    assert cache.stats()["hits"] == 1


def test_value_larger_than_maxsize_is_rejected_and_counted(registry: PerfRegistry) -> None:
    """A value over ``maxsize`` raises ``ValueError`` as in cachetools and counts as rejected."""
    cache: LRUCache[str, str] = LRUCache(5, name="c", registry=registry, getsizeof=len)
    cache["ok"] = "abc"
    with pytest.raises(ValueError, match="too large"):
        cache["big"] = "abcdefgh"
    stats = cache.stats()
    assert stats["rejected"] == 1
    assert stats["currsize"] == 3
    assert sample(registry, "cache_rejected_total", {"cache": "c"}) == 1


# -- time ------------------------------------------------------------------------------------


def test_ttl_expiry_counted_apart_from_capacity(registry: PerfRegistry) -> None:
    """Entries past their TTL are counted as ``expired``; a full cache's evictions as capacity."""
    clock = FakeClock()
    cache: TTLCache[str, int] = TTLCache(2, 10, name="t", registry=registry, timer=clock)
    cache["a"] = 1
    clock.now = 5
    cache["b"] = 2
    cache["c"] = 3  # full: "a" is the least recently used
    assert evictions(registry, "t", "capacity") == 1
    clock.now = 15.5  # "b" (stored at 5) has expired, "c" too
    assert cache.get("b") is None
    cache["d"] = 4  # cachetools expires on store
    assert evictions(registry, "t", "expired") == 2
    assert evictions(registry, "t", "capacity") == 1
    assert cache.stats()["misses"] == 1
    assert cache.ttl == 10


def test_deleting_an_expired_entry_counts_as_expired(registry: PerfRegistry) -> None:
    """``del`` of an entry that expired but was not purged yet raises and counts as expired."""
    clock = FakeClock()
    cache: TTLCache[str, int] = TTLCache(10, 1, name="t", registry=registry, timer=clock)
    cache["a"] = 1
    clock.now = 2
    with pytest.raises(KeyError):
        del cache["a"]
    assert cache.stats()["evictions"] == {"capacity": 0, "expired": 1, "explicit": 0}
    with pytest.raises(KeyError):
        del cache["never"]
    assert cache.stats()["evictions"]["expired"] == 1


def test_timed_get_freezes_the_clock(registry: PerfRegistry) -> None:
    """``get`` reads one instant: an entry cannot expire between the check and the read."""
    # Stored at 0 (expires at 3). A get that read the clock twice would see 2.0 then 3.0 and
    # raise KeyError from inside get(); frozen, it reads 2.0 once and hits.
    ticks = iter([0.0, 2.0, 3.0])
    cache: TTLCache[str, int] = TTLCache(
        10, 3, name="t", registry=registry, timer=lambda: next(ticks)
    )
    cache["a"] = 1
    assert cache.get("a") == 1
    assert cache.stats()["hits"] == 1


def test_timed_setdefault_and_pop(registry: PerfRegistry) -> None:
    """``setdefault`` and ``pop`` on a timed cache count and remove like the untimed ones."""
    cache: TTLCache[str, int] = TTLCache(10, 3, name="t", registry=registry, timer=FakeClock())
    assert cache.setdefault("a", 1) == 1
    assert cache.setdefault("a", 2) == 1
    assert cache.pop("a") == 1
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["evictions"]["explicit"]) == (1, 1, 1)


def test_timed_pop_of_missing_key(registry: PerfRegistry) -> None:
    """``pop`` on a timed cache follows the mapping contract: default or ``KeyError``."""
    cache: TTLCache[str, int] = TTLCache(10, 3, name="t", registry=registry, timer=FakeClock())
    assert cache.pop("x", 5) == 5
    with pytest.raises(KeyError):
        cache.pop("x")


def test_clear_on_timed_cache_separates_expired_from_explicit(registry: PerfRegistry) -> None:
    """``clear()`` counts dead entries as expired and only live ones as explicit."""
    clock = FakeClock()
    cache: TTLCache[int, int] = TTLCache(10, 5, name="t", registry=registry, timer=clock)
    cache[1] = 1
    clock.now = 3
    cache[2] = 2
    clock.now = 6
    cache.clear()
    assert cache.stats()["evictions"] == {"capacity": 0, "expired": 1, "explicit": 1}


def _full_cache(kind: str, registry: PerfRegistry) -> Any:
    clock = FakeClock()
    if kind == "lru":
        return LRUCache(4, name=kind, registry=registry)
    if kind == "lfu":
        return LFUCache(4, name=kind, registry=registry)
    if kind == "ttl":
        return TTLCache(4, 10, name=kind, registry=registry, timer=clock)
    return TLRUCache(4, lambda _k, _v, now: now + 10, name=kind, registry=registry, timer=clock)


@pytest.mark.parametrize("kind", ["lru", "lfu", "ttl", "tlru"])
def test_clear_and_explicit_removals_are_never_capacity_evictions(
    registry: PerfRegistry, kind: str
) -> None:
    """On every cachetools in range (7.0.0 and 7.0.1 clear a cache by popping its items one by
    one, the way a full cache evicts): del, pop and clear() of a full cache are explicit
    removals only, each entry counted once; only a store into the full cache is capacity."""
    cache = _full_cache(kind, registry)
    for i in range(4):
        cache[i] = i
    cache[4] = 4  # full: one capacity eviction
    del cache[4]
    assert cache.pop(3) == 3
    cache.clear()
    assert len(cache) == 0
    assert cache.stats()["evictions"] == {"capacity": 1, "expired": 0, "explicit": 4}
    for i in range(5):  # usable again after clear(): the policy's own structures were reset
        cache[i] = i
    assert cache.stats()["evictions"] == {"capacity": 2, "expired": 0, "explicit": 4}


def test_jitter_shortens_ttl_within_bounds_and_is_reproducible(registry: PerfRegistry) -> None:
    """With jitter each entry lives in ``[ttl*(1-jitter), ttl]``; a seeded RNG repeats it."""

    def survivors(name: str, at: float) -> list[int]:
        clock = FakeClock()
        cache: TTLCache[int, int] = TTLCache(
            1000, 100, name=name, registry=registry, jitter=0.2, rng=random.Random(7), timer=clock
        )
        for i in range(200):
            cache[i] = i
        clock.now = at
        return [i for i in range(200) if i in cache]

    assert len(survivors("a", 79.9)) == 200
    assert survivors("b", 100.0) == []
    middle = survivors("c", 90.0)
    assert 0 < len(middle) < 200
    assert survivors("d", 90.0) == middle


def test_tlru_cache_uses_per_entry_expiry(registry: PerfRegistry) -> None:
    """``TLRUCache`` takes ``ttu(key, value, now)`` and counts what it expires."""
    clock = FakeClock()
    cache: TLRUCache[str, int] = TLRUCache(
        10, lambda _k, v, now: now + v, name="t", registry=registry, timer=clock
    )
    cache["short"] = 1
    cache["long"] = 100
    clock.now = 2
    assert cache.get("short") is None
    assert cache["long"] == 100
    assert len(cache) == 1
    assert cache.stats()["evictions"]["expired"] == 1


# -- invalidation ----------------------------------------------------------------------------


def test_invalidate_where_and_prefix(registry: PerfRegistry) -> None:
    """Predicate and prefix invalidation remove matching tuple or str keys, counted explicit."""
    cache: LRUCache[Any, int] = LRUCache(100, name="c", registry=registry)
    for i in range(5):
        cache[("user", i)] = i
        cache[("team", i)] = i
        cache[f"page:{i}"] = i
    assert cache.invalidate_prefix(("user",)) == 5
    assert cache.invalidate_prefix("page:") == 5
    assert cache.invalidate_where(lambda k: k[1] % 2 == 0) == 3
    assert sorted(cache) == [("team", 1), ("team", 3)]
    assert cache.stats()["evictions"]["explicit"] == 13


def test_invalidate_where_skips_entries_that_expired(registry: PerfRegistry) -> None:
    """An entry that expired before the sweep is counted as expired, not as invalidated."""
    clock = FakeClock()
    cache: TTLCache[str, int] = TTLCache(10, 5, name="t", registry=registry, timer=clock)
    cache["old"] = 1
    clock.now = 4
    cache["new"] = 2
    clock.now = 6
    assert cache.invalidate_where(lambda _k: True) == 1
    assert cache.stats()["evictions"] == {"capacity": 0, "expired": 1, "explicit": 1}


# -- configuration ---------------------------------------------------------------------------

BAD_CONFIGS: list[tuple[Callable[[PerfRegistry], object], str]] = [
    (lambda r: LRUCache(10, name="", registry=r), ERR_NAME.format("")),
    (lambda r: LRUCache(10, name="x" * 101, registry=r), ERR_NAME.format("x" * 101)),
    (lambda r: LRUCache(10, name=3, registry=r), ERR_NAME.format(3)),  # type: ignore[arg-type]
    (lambda r: LRUCache(10, name="c", registry=None), ERR_REGISTRY.format(None)),  # type: ignore[arg-type]
    (lambda r: LRUCache(0, name="c", registry=r), ERR_MAXSIZE.format(0)),
    (lambda r: LRUCache(True, name="c", registry=r), ERR_MAXSIZE.format(True)),
    (lambda r: LRUCache(float("nan"), name="c", registry=r), ERR_MAXSIZE.format(float("nan"))),
    (lambda r: LRUCache(10, name="c", registry=r, lock=object()), ""),  # type: ignore[arg-type]
    (lambda r: TTLCache(10, 0, name="c", registry=r), ERR_TTL.format(0)),
    (lambda r: TTLCache(10, True, name="c", registry=r), ERR_TTL.format(True)),
    (lambda r: TTLCache(10, 1, name="c", registry=r, jitter=1), ERR_JITTER.format(1)),
    (lambda r: TTLCache(10, 1, name="c", registry=r, jitter=-0.1), ERR_JITTER.format(-0.1)),
    (lambda r: TLRUCache(10, 5, name="c", registry=r), ERR_TTU.format(5)),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("build", "message"), BAD_CONFIGS)
def test_bad_configuration_raises_value_error(
    registry: PerfRegistry, build: Callable[[PerfRegistry], object], message: str
) -> None:
    """Every bad constructor argument raises ``ValueError`` with the documented message."""
    with pytest.raises(ValueError) as info:  # noqa: PT011 - message compared below
        build(registry)
    expected = message or ERR_LOCK.split("{")[0]
    assert expected in str(info.value)
    assert len(caches(registry)) == 0


def test_duplicate_names_raise(registry: PerfRegistry) -> None:
    """Two caches may not share a name in one registry; other registries are independent."""
    LRUCache(10, name="users", registry=registry)
    with pytest.raises(ValueError) as info:  # noqa: PT011 - message compared below
        TTLCache(10, 1, name="users", registry=registry)
    assert str(info.value) == ERR_DUPLICATE.format("users")
    LRUCache(10, name="users", registry=PerfRegistry())


def test_cache_count_is_bounded_by_the_series_cap() -> None:
    """A registry exports at most ``max_series_per_metric // 3`` caches: names come from code."""
    registry = PerfRegistry(max_series_per_metric=6)
    LRUCache(10, name="a", registry=registry)
    LRUCache(10, name="b", registry=registry)
    with pytest.raises(ValueError) as info:  # noqa: PT011 - message compared below
        LRUCache(10, name="c", registry=registry)
    assert str(info.value) == ERR_TOO_MANY.format(2)


def test_cache_set_is_the_registry_component(registry: PerfRegistry) -> None:
    """The caches are found by name through the registry component; ``remove`` frees a name."""
    users: LRUCache[int, int] = LRUCache(10, name="users", registry=registry)
    assert registry.find_component(COMPONENT_KEY) is caches(registry)
    found = caches(registry)
    assert dict(found) == {"users": users}
    assert found["users"].stats()["name"] == "users"
    assert found == caches(registry)
    assert found != {"users": users}
    found.remove("users")
    assert len(found) == 0
    assert samples(registry, "cache_requests_total") == []
    LRUCache(10, name="users", registry=registry)


# -- exposition ------------------------------------------------------------------------------


def test_exposition_names_and_labels(registry: PerfRegistry) -> None:
    """Every cache metric is exposed per cache with the catalogue's labels."""
    cache: LRUCache[int, int] = LRUCache(4, name="users", registry=registry)
    cache[1] = 1
    cache[1]
    assert {tuple(sorted(s.items())) for s in samples(registry, "cache_requests_total")} == {
        (("cache", "users"), ("result", "hit")),
        (("cache", "users"), ("result", "miss")),
    }
    reasons = {s["reason"] for s in samples(registry, "cache_evictions_total")}
    assert reasons == {"capacity", "expired", "explicit"}
    assert sample(registry, "cache_entries", {"cache": "users"}) == 1
    assert sample(registry, "cache_maxsize", {"cache": "users"}) == 4
    for name in ("cache_load_errors_total", "cache_coalesced_total", "cache_rejected_total"):
        assert sample(registry, name, {"cache": "users"}) == 0
    count = sample(registry, "cache_load_duration_seconds", {"cache": "users"}, suffix="_count")
    assert count == 0


def test_namespace_prefixes_cache_metrics() -> None:
    """``PerfRegistry(namespace=...)`` prefixes the cache metrics like every other metric."""
    registry = PerfRegistry(namespace="app")
    cache: LRUCache[int, int] = LRUCache(4, name="users", registry=registry)
    cache.get(1)
    text = generate_latest(registry.prometheus).decode()
    assert 'app_cache_requests_total{cache="users",result="miss"} 1.0' in text


def test_exposition_passes_promtool(registry: PerfRegistry, promtool: str) -> None:
    """The exposition with several caches passes ``promtool check metrics``."""
    lru: LRUCache[int, int] = LRUCache(4, name="lru", registry=registry)
    ttl: TTLCache[int, int] = TTLCache(4, 1, name="ttl", registry=registry)
    for i in range(6):
        lru[i] = i
        ttl[i] = i
    lru.get(5)
    body = generate_latest(registry.prometheus)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_without_lock_never_mutates(registry: PerfRegistry) -> None:
    """Without a lock the scrape only reads: expired entries stay until the owner purges them."""
    clock = FakeClock()
    cache: TTLCache[int, int] = TTLCache(10, 1, name="t", registry=registry, timer=clock)
    cache[1] = 1
    clock.now = 5
    assert sample(registry, "cache_entries", {"cache": "t"}) == 1
    assert evictions(registry, "t", "expired") == 0
    assert len(cache) == 0  # the owner's read purges
    assert evictions(registry, "t", "expired") == 1


def test_scrape_with_lock_purges_under_the_lock(registry: PerfRegistry) -> None:
    """With a lock the scrape expires dead entries under it, so gauges show live entries."""
    clock = FakeClock()
    lock = threading.RLock()
    cache: TTLCache[int, int] = TTLCache(10, 1, name="t", registry=registry, timer=clock, lock=lock)
    cache[1] = 1
    clock.now = 5
    assert sample(registry, "cache_entries", {"cache": "t"}) == 0
    assert evictions(registry, "t", "expired") == 1


def test_a_failing_cache_does_not_empty_the_scrape(registry: PerfRegistry) -> None:
    """A cache whose scrape-time read raises is skipped and counted; the others are exported."""

    def broken_timer() -> float:
        raise RuntimeError("clock gone")

    ok: LRUCache[int, int] = LRUCache(4, name="ok", registry=registry)
    ok.get(1)
    bad: TTLCache[int, int] = TTLCache(
        4, 1, name="bad", registry=registry, timer=broken_timer, lock=threading.Lock()
    )
    assert bad.maxsize == 4
    assert requests(registry, "ok", "miss") == 1
    assert requests(registry, "bad", "miss") is None
    # Counted once per scrape: the two reads above were two scrapes.
    assert sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "cache"}) == 2

"""Cache counters and load histogram in multi-worker mode: kept in the worker's shared file."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from asgi_perf import PerfRegistry
from asgi_perf.cache import LRUCache, TTLCache, cached
from asgi_perf.export import _mp_store as store
from asgi_perf.export import _multiprocess as mp
from asgi_perf.testing import sample

from .._multiprocess import parse


def _merged(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    families: store.Families = {}
    assert store.merge_shared(families, directory) == []
    return {k: v for _, (_, _, vals) in families.items() for k, v in vals.items()}


def _work(cache: LRUCache[str, int], lookups: int) -> None:
    """``lookups`` misses loaded through ``cached`` (one load raises), then as many hits."""

    @cached(cache)
    def load(key: str) -> int:
        if key == "bad":
            raise RuntimeError("load failed")
        return len(key)

    for i in range(lookups):
        load(f"k{i}")
        load(f"k{i}")
    with pytest.raises(RuntimeError):
        load("bad")


def test_two_workers_counts_are_exact_without_publishing_and_survive_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two registries on one directory (two workers) count into their own files: the merged
    counts are exact at once (no publish), each worker's own view agrees, and the counts of a
    worker that is gone stay in the total."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    reg_a, reg_b = PerfRegistry(), PerfRegistry()
    cache_a = LRUCache[str, int](2, name="users", registry=reg_a)
    cache_b = LRUCache[str, int](2, name="users", registry=reg_b)
    _work(cache_a, 3)
    _work(cache_b, 4)
    users = ("cache", "users")
    values = _merged(tmp_path)
    assert values[("cache_requests_total", (users, ("result", "miss")))] == 3 + 1 + 4 + 1
    assert values[("cache_requests_total", (users, ("result", "hit")))] == 3 + 4
    # maxsize 2: every store past the second evicts one entry.
    assert values[("cache_evictions_total", (users, ("reason", "capacity")))] == 1 + 2
    assert values[("cache_evictions_total", (users, ("reason", "explicit")))] == 0
    assert values[("cache_evictions_total", (users, ("reason", "expired")))] == 0
    assert values[("cache_load_errors_total", (users,))] == 2
    assert values[("cache_coalesced_total", (users,))] == 0
    assert values[("cache_rejected_total", (users,))] == 0
    assert values[("cache_load_duration_seconds_count", (users,))] == 3 + 4  # failed: not timed
    stats = cache_a.stats()
    assert (stats["hits"], stats["misses"], stats["loads"], stats["load_errors"]) == (3, 4, 3, 1)
    assert isinstance(stats["hits"], int)
    assert sample(reg_a, "cache_requests_total", {"cache": "users", "result": "hit"}) == 3
    assert sample(reg_b, "cache_load_duration_seconds", {"cache": "users"}, suffix="_count") == 4
    for gauge in ("cache_entries", "cache_maxsize"):
        assert gauge not in reg_a.shared_families
        assert not any(name == gauge for name, _ in values)
    assert {"cache_requests", "cache_load_duration_seconds"} <= reg_a.shared_families

    # Worker b goes away without a word: nothing it counted is lost.
    del cache_b, reg_b
    gc.collect()
    assert _merged(tmp_path)[("cache_requests_total", (users, ("result", "hit")))] == 7
    m = mp.enable_multiprocess(reg_a, tmp_path, interval=60)
    try:
        merged = parse(generate_latest(m.view).decode())
        assert merged[("cache_requests_total", (users, ("result", "hit")))] == 7
        assert merged[("cache_entries", (users,))] == 2
        names = {family[0] for family in json.loads(m.path.read_bytes())["families"]}
        assert "cache_requests" not in names
        assert "cache_load_duration_seconds" not in names
        assert "cache_entries" in names
    finally:
        m.close()


def test_clear_and_expiry_are_counted_in_shared_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timed cache in multi-worker mode keeps the same eviction bookkeeping as in one
    process: a clear is explicit evictions only, and the cache stays its own class to users."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    reg = PerfRegistry()
    cache = TTLCache[str, int](10, ttl=60, name="sessions", registry=reg)
    for i in range(3):
        cache[f"s{i}"] = i
    assert cache.get("s1") == 1
    assert cache.get("nope") is None
    cache.clear()
    assert isinstance(cache, TTLCache)
    assert type(cache).__name__ == "TTLCache"
    values = _merged(tmp_path)
    sessions = ("cache", "sessions")
    assert values[("cache_evictions_total", (sessions, ("reason", "explicit")))] == 3
    assert values[("cache_evictions_total", (sessions, ("reason", "capacity")))] == 0
    assert values[("cache_requests_total", (sessions, ("result", "hit")))] == 1
    assert values[("cache_requests_total", (sessions, ("result", "miss")))] == 1


def test_single_process_caches_keep_plain_int_counters() -> None:
    """Without a multi-worker directory a cache's counters stay plain attributes of its class."""
    reg = PerfRegistry()
    cache = LRUCache[str, int](2, name="plain", registry=reg)
    cache["a"] = 1
    assert cache["a"] == 1
    assert type(cache) is LRUCache
    assert reg.shared is None
    assert vars(cache)["_hits"] == 1


def test_caches_built_after_a_late_enable_count_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a registry that got multi-worker mode after its first cache, every cache keeps counting
    where the first one does (the published snapshot), so no count is merged twice."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    reg = PerfRegistry()
    early = LRUCache[str, int](2, name="early", registry=reg)
    m = mp.enable_multiprocess(reg, tmp_path, interval=60)
    try:
        late = LRUCache[str, int](2, name="late", registry=reg)
        for cache in (early, late):
            cache["k"] = 1
            assert cache["k"] == 1
        assert type(late) is LRUCache
        merged = parse(generate_latest(m.view).decode())
        for name in ("early", "late"):
            assert merged[("cache_requests_total", (("cache", name), ("result", "hit")))] == 1
    finally:
        m.close()

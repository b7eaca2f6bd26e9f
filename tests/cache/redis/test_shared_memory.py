"""Redis tier counters and durations in multi-worker mode: kept in the worker's shared file."""

from __future__ import annotations

import gc
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import generate_latest

from asgi_perf import PerfRegistry
from asgi_perf.cache import TTLCache
from asgi_perf.cache.redis._tiered import TieredCache
from asgi_perf.export import _mp_store as store
from asgi_perf.export import _multiprocess as mp
from asgi_perf.testing import sample

from ..._multiprocess import parse

pytestmark = [pytest.mark.anyio, pytest.mark.service("redis")]


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """A client on the real Redis and a fresh namespace (its keys deleted afterwards)."""
    ns = f"t-{uuid.uuid4().hex[:12]}"
    c = aioredis.Redis.from_url(redis_url)
    yield c, ns
    keys = [k async for k in c.scan_iter(match=f"{ns}:*")]
    if keys:
        await c.unlink(*keys)
    await c.aclose()


def _merged(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    families: store.Families = {}
    assert store.merge_shared(families, directory) == []
    return {k: v for _, (_, _, vals) in families.items() for k, v in vals.items()}


def _loader(key: str) -> Callable[[], Awaitable[Any]]:
    async def load() -> Any:
        return {"key": key}

    return load


async def test_two_workers_tier_counts_are_exact_and_survive_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: tuple[aioredis.Redis, str]
) -> None:
    """Two registries on one directory (two workers), each with a tier on one Redis: Redis hits,
    misses, errors by label and command durations are exact at once in the merged view (no
    publish), each worker's own view agrees, and a worker that is gone keeps its counts."""
    redis, ns = client
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    reg_a, reg_b = PerfRegistry(), PerfRegistry()
    tiers = [
        TieredCache(
            TTLCache[str, Any](100, 60, name="users", registry=reg),
            redis,
            namespace=ns,
            ttl=60,
            timeout=5,  # a healthy command is never a timeout, however loaded the machine
        )
        for reg in (reg_a, reg_b)
    ]
    a, b = tiers
    for i in range(3):
        await a.get_or_load(f"k{i}", _loader(f"k{i}"))  # Redis miss, then a load
    for i in range(3):
        await b.get_or_load(f"k{i}", _loader(f"k{i}"))  # Redis hit
    await b.get_or_load("new", _loader("new"))  # Redis miss
    users = ("cache", "users")
    values = _merged(tmp_path)
    requests = "cache_tier_requests_total"
    assert values[(requests, (users, ("result", "hit"), ("tier", "redis")))] == 3
    assert values[(requests, (users, ("result", "miss"), ("tier", "redis")))] == 3 + 1
    assert values[(requests, (users, ("result", "error"), ("tier", "redis")))] == 0
    assert values[("cache_redis_errors_total", (users, ("operation", "get")))] == 0
    assert values[("cache_redis_fallbacks_total", (users, ("reason", "error")))] == 0
    get = (users, ("operation", "get"))
    assert values[("cache_redis_duration_seconds_count", get)] == 3 + 4
    assert a.stats.hits == 0
    assert (b.stats.hits, b.stats.misses) == (3, 1)
    assert sample(reg_b, requests, {"cache": "users", "tier": "redis", "result": "hit"}) == 3
    assert "cache_redis_circuit_open" not in reg_a.shared_families
    assert {"cache_tier_requests", "cache_redis_duration_seconds"} <= reg_a.shared_families

    # Worker b goes away without a word: nothing it counted is lost.
    await b.aclose()
    del tiers, b, reg_b
    gc.collect()
    m = mp.enable_multiprocess(reg_a, tmp_path, interval=60)
    try:
        merged = parse(generate_latest(m.view).decode())
        assert merged[(requests, (users, ("result", "hit"), ("tier", "redis")))] == 3
        assert merged[("cache_redis_circuit_open", (users,))] == 0
        names = {family[0] for family in json.loads(m.path.read_bytes())["families"]}
        assert "cache_tier_requests" not in names
        assert "cache_redis_circuit_open" in names
    finally:
        m.close()
        await a.aclose()

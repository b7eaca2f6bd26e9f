"""Redis second tier: local-tier hits and Redis-tier hits, asgi-perf vs raw redis-py and peers.

Two scenarios, every contender in every round in a rotating order (interleaved), medians over
rounds, ratio to the reference row:

* **local-tier hit**: the value is in the process (asgi-perf's local tier, cashews' client-side
  cache); reference: a bare ``async def`` dict lookup.
* **Redis-tier hit**: the value is only in Redis (asgi-perf with a 1-entry local tier and 100
  rotating keys, so every call misses locally); reference: a raw ``redis.asyncio`` ``GET`` +
  ``json.loads``. Peers: aiocache ``RedisCache`` (JSON) and cashews ``redis://`` (its default
  pickle serializer).

Needs the Redis server at ``--url`` (default redis://127.0.0.1:6379/0). Keys live under
``bench-tier-*`` and are deleted at the end.

Usage: ./scripts/bench redis_tier [--rounds 9] [--local-calls 20000] [--redis-calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

import redis
import redis.asyncio as aioredis

from asgi_perf import PerfRegistry
from asgi_perf.cache import LRUCache
from asgi_perf.cache.redis import TieredCache

KEYS = [f"k{i}" for i in range(100)]
VALUE = {"id": 42, "name": "Ada Lovelace", "roles": ["admin", "author"], "active": True}
Fn = Callable[[str], Awaitable[Any]]


async def load(_key: str) -> Any:
    return VALUE


class Contenders:
    """Every contender, built once; ``local`` and ``remote`` map a row name to ``fn(key)``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.local: dict[str, Fn] = {}
        self.remote: dict[str, Fn] = {}
        self._closers: list[Callable[[], Awaitable[Any]]] = []

    async def build(self) -> None:
        from aiocache import RedisCache
        from aiocache.serializers import JsonSerializer
        from cashews import Cache

        registry = PerfRegistry()
        client = aioredis.Redis.from_url(self.url)
        self._closers.append(client.aclose)
        data: dict[str, Any] = {}

        async def bare(key: str) -> Any:
            try:
                return data[key]
            except KeyError:
                value = data[key] = await load(key)
                return value

        hot = TieredCache(
            LRUCache(1000, name="hot", registry=registry), client, namespace="bench-tier-a", ttl=600
        )
        cold = TieredCache(
            LRUCache(1, name="cold", registry=registry), client, namespace="bench-tier-b", ttl=600
        )

        @hot.cached
        async def decorated(key: str) -> Any:
            return VALUE

        async def get_hot(key: str) -> Any:
            return await hot.get_or_load(key, lambda: load(key))

        async def get_cold(key: str) -> Any:
            return await cold.get_or_load(key, lambda: load(key))

        async def raw(key: str) -> Any:
            data = await client.get("bench-tier-raw:" + key)
            return json.loads(data) if data is not None else None

        aio = RedisCache(
            serializer=JsonSerializer(), namespace="bench-tier-aio:", endpoint="127.0.0.1"
        )
        self._closers.append(aio.close)
        cashews_remote = Cache()
        cashews_remote.setup(self.url)
        cashews_local = Cache()
        cashews_local.setup(self.url, client_side=True, client_side_prefix="bench-tier-cl:")
        self._closers.extend((cashews_remote.close, cashews_local.close))

        for key in KEYS:  # each library writes its own format
            await client.set("bench-tier-raw:" + key, json.dumps(VALUE), ex=600)
            await cold.set(key, VALUE)
            await aio.set(key, VALUE, ttl=600)
            await cashews_remote.set("bench-tier-cr:" + key, VALUE, expire=600)
            await cashews_local.set("bench-tier-cl:" + key, VALUE, expire=600)

        async def cashews_mem(key: str) -> Any:
            return await cashews_local.get("bench-tier-cl:" + key)

        async def cashews_redis(key: str) -> Any:
            return await cashews_remote.get("bench-tier-cr:" + key)

        self.local = {
            "bare async dict lookup": bare,
            "asgi-perf TieredCache.get_or_load": get_hot,
            "asgi-perf @tier.cached": decorated,
            "cashews redis client_side (mem hit)": cashews_mem,
        }
        self.remote = {
            "raw redis.asyncio GET + json.loads": raw,
            "asgi-perf TieredCache (Redis-tier hit)": get_cold,
            "aiocache RedisCache (JSON)": aio.get,
            "cashews redis:// (pickle)": cashews_redis,
        }
        # One pass so connections are open and the hot set is warm before any timing.
        for fns in (self.local, self.remote):
            for fn in fns.values():
                for key in KEYS:
                    assert await fn(key) == VALUE, fn

    async def close(self) -> None:
        for close in reversed(self._closers):
            await close()
        sync = redis.Redis.from_url(self.url)
        for pattern in ("bench-tier-*", "bench-tier-*:*"):
            keys = list(sync.scan_iter(match=pattern, count=1000))
            if keys:
                sync.unlink(*keys)
        sync.close()


async def timed(fn: Fn, calls: int) -> float:
    keys = KEYS
    n = len(keys)
    start = perf_counter()
    for i in range(calls):
        await fn(keys[i % n])
    return (perf_counter() - start) / calls * 1e9


async def run(fns: dict[str, Fn], rounds: int, calls: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    names = list(fns)
    for round_no in range(rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            results.setdefault(name, []).append(await timed(fns[name], calls))
    return results


def table(title: str, results: dict[str, list[float]], reference: str, unit: str) -> str:
    scale = 1000.0 if unit == "µs" else 1.0
    medians = {name: statistics.median(v) / scale for name, v in results.items()}
    ref = medians[reference]
    lines = [
        f"**{title}** (ratio to {reference})",
        "",
        f"| contender | {unit}/call (median) | ratio |",
        "|---|---:|---:|",
    ]
    lines.extend(
        f"| {name} | {v:,.{1 if unit == 'µs' else 0}f} | {v / ref:.2f}× |"  # noqa: RUF001
        for name, v in sorted(medians.items(), key=lambda item: item[1])
    )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--local-calls", type=int, default=20_000)
    parser.add_argument("--redis-calls", type=int, default=2_000)
    args = parser.parse_args()
    from importlib.metadata import version

    print(
        f"Python {platform.python_version()}, redis-py {redis.__version__}, "
        f"aiocache {version('aiocache')}, cashews {version('cashews')}; {args.rounds} "
        f"interleaved rounds, {args.local_calls} local / {args.redis_calls} Redis calls per "
        "contender per round, one event loop, Redis on 127.0.0.1\n"
    )
    contenders = Contenders(args.url)
    try:
        await contenders.build()
        local = await run(contenders.local, args.rounds, args.local_calls)
        print(table("Local-tier hit", local, "bare async dict lookup", "ns"))
        print()
        remote = await run(contenders.remote, args.rounds, args.redis_calls)
        print(table("Redis-tier hit", remote, "raw redis.asyncio GET + json.loads", "µs"))
    finally:
        await contenders.close()


if __name__ == "__main__":
    asyncio.run(main())

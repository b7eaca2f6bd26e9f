"""Cache hit path and a 90%-hit mix: asgi-perf vs cachetools, functools and the async peers.

Every contender runs in every round, in a rotating order (interleaved), on the same key sequence;
the table reports the median ns/call over rounds and the ratio to the reference (cachetools'
``@cached(LRUCache)`` for sync, async-lru for async). Times include the driving ``for`` loop, the
same for every row.

Usage: ./scripts/bench cache [--rounds 15] [--calls 20000] [--async-calls 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import platform
import random
import statistics
import threading
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter
from typing import Any

import cachetools
from cachetools.keys import hashkey

from asgi_perf import PerfRegistry
from asgi_perf.cache import LRUCache, TTLCache, cached

HOT_KEYS = 100
MAXSIZE = 1024

SyncFn = Callable[[int], Any]
AsyncFn = Callable[[int], Awaitable[Any]]


def load(x: int) -> int:
    return x


async def aload(x: int) -> int:
    return x


# -- contenders (built fresh for every round so the mix starts from the same state) ------------


def sync_contenders(registry: PerfRegistry) -> dict[str, SyncFn]:
    data: dict[int, int] = {}

    def plain_dict(x: int) -> int:
        try:
            return data[x]
        except KeyError:
            value = data[x] = load(x)
            return value

    lock = threading.RLock()
    return {
        "plain dict": plain_dict,
        "functools.lru_cache": functools.lru_cache(maxsize=MAXSIZE)(load),
        "cachetools @cached(LRUCache)": cachetools.cached(cachetools.LRUCache(MAXSIZE))(load),
        "cachetools @cached(LRUCache, info=True)": cachetools.cached(
            cachetools.LRUCache(MAXSIZE), info=True
        )(load),
        "asgi-perf @cached(LRUCache)": cached(LRUCache(MAXSIZE, name="lru", registry=registry))(
            load
        ),
        "asgi-perf @cached(LRUCache, info=True)": cached(
            LRUCache(MAXSIZE, name="lru_info", registry=registry), info=True
        )(load),
        "cachetools @cached(TTLCache)": cachetools.cached(cachetools.TTLCache(MAXSIZE, 3600))(load),
        "asgi-perf @cached(TTLCache)": cached(
            TTLCache(MAXSIZE, 3600, name="ttl", registry=registry)
        )(load),
        "cachetools @cached(LRUCache, lock=RLock)": cachetools.cached(
            cachetools.LRUCache(MAXSIZE), lock=threading.RLock()
        )(load),
        "asgi-perf @cached(LRUCache(lock=RLock))": cached(
            LRUCache(MAXSIZE, name="lru_lock", registry=registry, lock=lock)
        )(load),
    }


def async_contenders(registry: PerfRegistry) -> dict[str, AsyncFn]:
    from aiocache import Cache as AioCache
    from aiocache import cached as aio_cached
    from aiocache.plugins import HitMissRatioPlugin
    from async_lru import alru_cache
    from cashews import Cache as CashewsCache

    store: cachetools.LRUCache[Any, int] = cachetools.LRUCache(MAXSIZE)

    async def plain_wrapper(x: int) -> int:
        # The minimal correct async memoizer: cachetools' key, no counting, no single-flight.
        key = hashkey(x)
        try:
            return store[key]
        except KeyError:
            value = store[key] = await aload(x)
            return value

    cashews = CashewsCache()
    cashews.setup("mem://", size=MAXSIZE * 100)

    @cashews(ttl=3600)
    async def cashews_fn(x: int) -> int:
        return x

    @aio_cached(cache=AioCache.MEMORY, plugins=[HitMissRatioPlugin()])
    async def aiocache_fn(x: int) -> int:
        return x

    return {
        "plain async wrapper over cachetools": plain_wrapper,
        "async-lru": alru_cache(maxsize=MAXSIZE)(aload),
        "asgi-perf @cached(LRUCache)": cached(
            LRUCache(MAXSIZE, name="async_lru", registry=registry)
        )(aload),
        "asgi-perf @cached(TTLCache)": cached(
            TTLCache(MAXSIZE, 3600, name="async_ttl", registry=registry)
        )(aload),
        "aiocache + HitMissRatioPlugin": aiocache_fn,
        "cashews (mem://)": cashews_fn,
    }


# -- key sequences ---------------------------------------------------------------------------


def hit_keys(calls: int) -> list[int]:
    return [1] * calls


def mix_keys(calls: int, seed: int) -> list[int]:
    """90% of calls on the warm hot set, 10% on keys never seen before (always a miss)."""
    rng = random.Random(seed)
    fresh = iter(range(1_000_000, 10_000_000))
    return [rng.randrange(HOT_KEYS) if rng.random() < 0.9 else next(fresh) for _ in range(calls)]


# -- timing ----------------------------------------------------------------------------------


def time_sync(fn: SyncFn, keys: Sequence[int]) -> float:
    start = perf_counter()
    for key in keys:
        fn(key)
    return perf_counter() - start


async def time_async(fn: AsyncFn, keys: Sequence[int]) -> float:
    start = perf_counter()
    for key in keys:
        await fn(key)
    return perf_counter() - start


def rotate(names: list[str], round_no: int) -> list[str]:
    shift = round_no % len(names)
    return names[shift:] + names[:shift]


def bench_sync(scenario: str, rounds: int, calls: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for round_no in range(rounds):
        contenders = sync_contenders(PerfRegistry())
        keys = hit_keys(calls) if scenario == "hit" else mix_keys(calls, round_no)
        for name in rotate(list(contenders), round_no):
            fn = contenders[name]
            for key in range(HOT_KEYS):  # warm: the hot set is cached before timing
                fn(key)
            results.setdefault(name, []).append(time_sync(fn, keys) / calls * 1e9)
    return results


def bench_async(scenario: str, rounds: int, calls: int) -> dict[str, list[float]]:
    async def main() -> dict[str, list[float]]:
        results: dict[str, list[float]] = {}
        for round_no in range(rounds):
            contenders = async_contenders(PerfRegistry())
            keys = hit_keys(calls) if scenario == "hit" else mix_keys(calls, round_no)
            for name in rotate(list(contenders), round_no):
                fn = contenders[name]
                for key in range(HOT_KEYS):
                    await fn(key)
                elapsed = await time_async(fn, keys)
                results.setdefault(name, []).append(elapsed / calls * 1e9)
        return results

    return asyncio.run(main())


def table(title: str, results: dict[str, list[float]], reference: str) -> str:
    medians = {name: statistics.median(values) for name, values in results.items()}
    ref = medians[reference]
    lines = [
        f"**{title}** (ratio to {reference})",
        "",
        "| contender | ns/call (median) | ratio |",
        "|---|---:|---:|",
    ]
    lines.extend(
        f"| {name} | {ns:,.0f} | {ns / ref:.2f}× |"  # noqa: RUF001 - the ratio sign, on purpose
        for name, ns in sorted(medians.items(), key=lambda item: item[1])
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--async-calls", type=int, default=5_000)
    args = parser.parse_args()
    print(
        f"Python {platform.python_version()}, cachetools {cachetools.__version__}, "
        f"{args.rounds} interleaved rounds, {args.calls} sync / {args.async_calls} async calls "
        "per contender per round\n"
    )
    sync_ref = "cachetools @cached(LRUCache)"
    print(table("Sync hit path", bench_sync("hit", args.rounds, args.calls), sync_ref))
    print()
    print(table("Sync 90%-hit mix", bench_sync("mix", args.rounds, args.calls), sync_ref))
    print()
    async_ref = "async-lru"
    print(table("Async hit path", bench_async("hit", args.rounds, args.async_calls), async_ref))
    print()
    mix = bench_async("mix", args.rounds, args.async_calls)
    print(table("Async 90%-hit mix", mix, async_ref))


if __name__ == "__main__":
    main()

"""A second process holding a TieredCache, driven line by line over stdin/stdout.

``python -m tests.apps.tiered_peer REDIS_URL NAMESPACE``; commands: ``load KEY VALUE`` (prints the
value it got), ``has KEY`` (``yes``/``no``: is KEY in this process' local tier), ``quit``.
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis

from asgi_perf import PerfRegistry
from asgi_perf.cache import TTLCache
from asgi_perf.cache.redis import TieredCache


async def main(url: str, namespace: str) -> None:
    client = aioredis.Redis.from_url(url)
    local: TTLCache[str, object] = TTLCache(100, 60, name="peer", registry=PerfRegistry())
    loop = asyncio.get_running_loop()
    async with TieredCache(local, client, namespace=namespace, ttl=60, timeout=5) as tier:
        print("ready", flush=True)
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).split():
            if line[0] == "load":

                async def loader(value: str = line[2]) -> str:
                    return value

                print(await tier.get_or_load(line[1], loader), flush=True)
            elif line[0] == "has":
                print("yes" if line[1] in local else "no", flush=True)
            else:
                break
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

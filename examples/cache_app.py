"""A FastAPI app with metered caches: an async TTL cache, a sync LRU cache, invalidation, /metrics.

Needs:    pip install "asgi-perf[cachetools]" fastapi uvicorn
Run it:   python examples/cache_app.py
Then:     curl localhost:8000/users/1       (twice: a miss, then a hit)
          curl -X POST localhost:8000/users/1/rename?name=ada   (invalidates user 1)
          curl localhost:8000/cache-stats   (the counters as JSON)
          curl localhost:8000/metrics       (cache_requests_total, cache_evictions_total, ...)
"""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

from fastapi import FastAPI

from asgi_perf import instrument
from asgi_perf.cache import LRUCache, TTLCache, cached, caches

app = FastAPI()
registry = instrument(app)

# Async code on one event loop needs no lock. The jitter spreads expiry over 54-60 s so entries
# loaded together are not all reloaded together.
users: TTLCache[Any, dict[str, Any]] = TTLCache(
    maxsize=10_000, ttl=60, jitter=0.1, rng=random.Random(), name="users", registry=registry
)
# Sync code run in the thread pool shares this cache between threads: give it a lock.
settings: LRUCache[Any, str] = LRUCache(
    maxsize=100, name="settings", registry=registry, lock=threading.RLock()
)

NAMES = {1: "grace", 2: "linus"}


@cached(users)
async def load_user(user_id: int) -> dict[str, Any] | None:
    await asyncio.sleep(0.05)  # the database round trip the cache saves
    name = NAMES.get(user_id)
    return None if name is None else {"id": user_id, "name": name}  # None is cached too


@cached(settings)
def load_setting(key: str) -> str:
    return f"value of {key}"


@app.get("/users/{user_id}")
async def get_user(user_id: int) -> dict[str, Any] | None:
    return await load_user(user_id)


@app.post("/users/{user_id}/rename")
async def rename(user_id: int, name: str) -> dict[str, Any] | None:
    NAMES[user_id] = name
    load_user.invalidate(user_id)  # the next read loads the new name
    return await load_user(user_id)


@app.get("/settings/{key}")
def get_setting(key: str) -> str:  # a sync endpoint: runs in the thread pool
    return load_setting(key)


@app.get("/cache-stats")
async def cache_stats() -> dict[str, Any]:
    return {name: cache.stats() for name, cache in caches(registry).items()}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)

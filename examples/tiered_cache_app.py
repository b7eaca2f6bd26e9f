"""A FastAPI app with a two-tier cache: a local TTL cache in front of Redis, shared by every
process, with cross-process invalidation and per-tier metrics.

Needs:    pip install "asgi-perf[redis]" fastapi uvicorn   and a Redis server
Run it:   REDIS_URL=redis://127.0.0.1:6379/0 python examples/tiered_cache_app.py
          (start a second copy with PORT=8001 to see invalidation cross processes)
Then:     curl localhost:8000/users/1        (a load, then local hits; on :8001 a Redis-tier hit)
          curl -X POST "localhost:8000/users/1/rename?name=ada"   (both processes drop user 1)
          curl -X POST localhost:8000/users/invalidate   (SCAN-based prefix invalidation)
          curl localhost:8000/metrics        (cache_requests_total, cache_tier_requests_total, ...)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from asgi_perf import PerfRegistry, instrument
from asgi_perf.cache import TTLCache
from asgi_perf.cache.redis import TieredCache

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
NAMES = {1: "grace", 2: "linus"}

registry = PerfRegistry()
# Fail fast: the tier falls back to the database when Redis is slow, so do not let the client
# retry for seconds first. The tier also bounds every command itself (timeout=0.25 by default).
client = aioredis.Redis.from_url(
    REDIS_URL,
    socket_connect_timeout=0.25,
    socket_timeout=0.25,
    retry=Retry(ExponentialWithJitterBackoff(cap=0.1, base=0.01), 1),
    health_check_interval=30,
)
# The local tier lives 30 s at most, the Redis tier 5 minutes: a process that missed an
# invalidation message serves a stale value for at most 30 s.
users = TieredCache(
    TTLCache(maxsize=10_000, ttl=30, jitter=0.1, name="users", registry=registry),
    client,
    namespace="example.users",
    ttl=300,
)


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    async with users:  # subscribes to the invalidation channel; never fails if Redis is down
        yield
    await client.aclose()


app = FastAPI(lifespan=lifespan)
instrument(app, registry=registry)


@users.cached(key=lambda user_id: ("user", user_id))
async def load_user(user_id: int) -> dict[str, Any] | None:
    await asyncio.sleep(0.05)  # the database round trip the cache saves
    name = NAMES.get(user_id)
    return None if name is None else {"id": user_id, "name": name}  # None is cached too


@app.get("/users/{user_id}")
async def get_user(user_id: int) -> dict[str, Any] | None:
    return await load_user(user_id)


@app.post("/users/{user_id}/rename")
async def rename(user_id: int, name: str) -> dict[str, Any] | None:
    NAMES[user_id] = name
    await load_user.invalidate(user_id)  # both tiers, every process
    return await load_user(user_id)


@app.post("/users/invalidate")
async def invalidate_all() -> dict[str, int]:
    return {"removed": await users.invalidate_prefix(("user",))}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))

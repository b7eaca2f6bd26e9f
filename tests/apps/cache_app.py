"""A FastAPI app with a metered TTL cache behind an async endpoint, for end-to-end tests."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from asgi_perf import instrument
from asgi_perf.cache import TTLCache, cached

app = FastAPI()
registry = instrument(app)
users: TTLCache[object, dict[str, int]] = TTLCache(100, 60, name="users", registry=registry)
loads: list[int] = []


@cached(users)
async def load_user(user_id: int) -> dict[str, int]:
    loads.append(user_id)
    await asyncio.sleep(0.05)  # a slow backend, so concurrent requests overlap the load
    return {"id": user_id}


@app.get("/")
async def index() -> str:
    return "ok"


@app.get("/users/{user_id}")
async def user(user_id: int) -> dict[str, int]:
    return await load_user(user_id)


@app.get("/loads")
async def load_count() -> int:
    return len(loads)

"""One app with every instrument on, for linting the whole exposition with promtool.

The demo app (HTTP middleware, SQLAlchemy on SQLite, Socket.IO with a batcher, two metered caches,
timers, counters, monitor, alerts and system figures) plus a Redis second cache tier at
``/tiered/{key}``. Environment: ``ASGI_PERF_REDIS`` (Redis URL) and ``ASGI_PERF_TIER_NAMESPACE``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from asgi_perf import PerfRegistry
from asgi_perf.cache import TTLCache
from asgi_perf.cache.redis import TieredCache
from asgi_perf.demo import build_demo

registry = PerfRegistry()
demo = build_demo(registry=registry)
client = aioredis.Redis.from_url(os.environ.get("ASGI_PERF_REDIS", "redis://127.0.0.1:6379/0"))
local: TTLCache[str, Any] = TTLCache(maxsize=8, ttl=60, name="tiered", registry=registry)
tier = TieredCache(
    local,
    client,
    namespace=os.environ.get("ASGI_PERF_TIER_NAMESPACE", "full-app"),
    ttl=60,
    timeout=5,  # the scrape expects a Redis miss, not a timeout on a loaded machine
)


async def tiered(request: Request) -> Response:
    key = str(request.path_params["key"])

    async def load() -> str:
        return key.upper()

    value: str = await tier.get_or_load(key, load)
    return JSONResponse({"value": value})


demo.web.add_route("/tiered/{key}", tiered)
_demo_lifespan = demo.web.router.lifespan_context


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    async with _demo_lifespan(app), tier:
        yield
    await client.aclose()


demo.web.router.lifespan_context = _lifespan
app = demo.app

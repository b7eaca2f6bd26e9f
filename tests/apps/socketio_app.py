"""A Socket.IO server under uvicorn for the end-to-end tests: hook, batcher, HTTP middleware.

Configured by environment: ``SIO_REDIS_URL`` + ``SIO_CHANNEL`` (use ``AsyncRedisManager``),
``SIO_MAX_EVENTS`` (event-name limit). Clients drive it with events:

* ``connect`` rejects a client whose auth is ``{"reject": true}``;
* ``handler_calls`` returns how often the app's own connect/disconnect/catch-all handlers ran;
* ``kick`` disconnects the calling client from the server side;
* ``stream`` emits ``n`` numbered payloads to room ``all`` through the batcher, an unbatched one
  every ``every`` payloads, then flushes and acknowledges.
"""

from __future__ import annotations

import os
from typing import Any

import socketio
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_perf import PerfMiddleware, PerfRegistry, metrics_app
from asgi_perf.socketio import SOCKETIO_PATH_PATTERN, Batcher, instrument_socketio

registry = PerfRegistry()
redis_url = os.environ.get("SIO_REDIS_URL")
manager = (
    socketio.AsyncRedisManager(redis_url, channel=os.environ.get("SIO_CHANNEL", "socketio"))
    if redis_url
    else None
)
sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager)
calls = {"connect": 0, "disconnect": 0, "catch_all": 0}


async def connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
    calls["connect"] += 1
    if isinstance(auth, dict) and auth.get("reject"):
        return False
    await sio.enter_room(sid, "all")
    return True


sio.on("connect", connect)


# Registered before the hook is installed; "disconnect" below is registered after it.
hook = instrument_socketio(
    sio, registry=registry, max_events=int(os.environ.get("SIO_MAX_EVENTS", "100"))
)


async def disconnect(sid: str, reason: str | None = None) -> None:
    # python-socketio 5.11 calls it without a reason.
    calls["disconnect"] += 1


sio.on("disconnect", disconnect)


async def catch_all(event: str, sid: str, data: Any) -> None:
    calls["catch_all"] += 1


sio.on("*", catch_all)


async def handler_calls(sid: str, data: Any) -> dict[str, int]:
    return calls


sio.on("handler_calls", handler_calls)


async def kick(sid: str, data: Any) -> None:
    await sio.disconnect(sid)


sio.on("kick", kick)


batcher = Batcher(sio, registry=registry, max_items=50, max_delay=0.02)


async def stream(sid: str, data: dict[str, int]) -> str:
    every = data.get("every", 0)
    for i in range(data["n"]):
        await batcher.emit("tick", i, to="all", batch=not (every and i % every == every - 1))
    await batcher.flush()
    return "done"


sio.on("stream", stream)


starlette = Starlette(routes=[Route("/metrics", metrics_app(registry))])
app = PerfMiddleware(
    socketio.ASGIApp(sio, other_asgi_app=starlette),
    registry=registry,
    exclude_patterns=[SOCKETIO_PATH_PATTERN],
)

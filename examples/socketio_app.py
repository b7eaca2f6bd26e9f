"""A Socket.IO chat with asgi-perf: exact connection/event metrics and batched cursor updates.

Run:  uvicorn examples.socketio_app:app --port 8000
Then: curl http://127.0.0.1:8000/metrics | grep socketio_
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import socketio
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_perf import PerfMiddleware, PerfRegistry, metrics_app
from asgi_perf.socketio import SOCKETIO_PATH_PATTERN, Batcher, instrument_socketio

registry = PerfRegistry()
sio = socketio.AsyncServer(async_mode="asgi")
instrument_socketio(sio, registry=registry)
# Cursor positions are small and frequent: send them 50 at a time or every 50 ms.
cursors = Batcher(sio, registry=registry, max_items=50, max_delay=0.05)


async def connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
    # Rejected clients are counted as socketio_connects_total{outcome="rejected"}.
    return not (isinstance(auth, dict) and auth.get("banned"))


async def cursor(sid: str, position: dict[str, int]) -> None:
    await cursors.emit("cursor", {"sid": sid, **position}, skip_sid=sid)


async def message(sid: str, text: str) -> None:
    await sio.emit("message", {"sid": sid, "text": text})


sio.on("connect", connect)
sio.on("cursor", cursor)
sio.on("message", message)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await cursors.aclose()  # flush what is pending: nothing is lost on shutdown


web = Starlette(routes=[Route("/metrics", metrics_app(registry))], lifespan=lifespan)
# Socket.IO long-polling requests stay out of the HTTP latency histograms.
app = PerfMiddleware(
    socketio.ASGIApp(sio, other_asgi_app=web),
    registry=registry,
    exclude_patterns=[SOCKETIO_PATH_PATTERN],
)

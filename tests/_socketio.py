"""Helpers for the Socket.IO tests: read a live server's /metrics, connect real clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

import httpx
import socketio
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from ._server import free_port

SOCKETIO_VERSION = tuple(int(part) for part in version("python-socketio").split(".")[:2])
#: The reasons a client-side disconnect may be counted under: python-socketio 5.11 passes none.
CLIENT_REASONS = (
    {"client_disconnect", "transport_close"} if SOCKETIO_VERSION >= (5, 12) else {"unknown"}
)


async def metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the server's /metrics as ``{(name, sorted labels): value}``."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(base + "/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """One sample (0 when absent)."""
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def names(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str
) -> list[dict[str, str]]:
    """The label sets of every sample called ``name``."""
    return [dict(labels) for (n, labels) in found if n == name]


async def connect(base: str, transport: str = "websocket", **kwargs: Any) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(base, transports=[transport], wait_timeout=10, **kwargs)
    return client


async def settle() -> None:
    """Let the in-loop server and clients exchange what is in flight (a few loop turns)."""
    for _ in range(20):
        await asyncio.sleep(0.01)


@asynccontextmanager
async def serving(sio: socketio.AsyncServer) -> AsyncIterator[str]:
    """``sio`` served by uvicorn in this event loop; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(socketio.ASGIApp(sio), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started:  # uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task

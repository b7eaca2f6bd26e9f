"""A real python-socketio AsyncServer under uvicorn, in the test's own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import socketio
import uvicorn

from .._server import free_port


@pytest.fixture
async def live() -> AsyncIterator[tuple[socketio.AsyncServer, str]]:
    """A fresh AsyncServer served by uvicorn in this event loop; yields (server, base URL)."""
    sio = socketio.AsyncServer(async_mode="asgi", namespaces=["/", "/chat"])
    port = free_port()
    config = uvicorn.Config(socketio.ASGIApp(sio), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started:  # uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    yield sio, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task

"""A real python-socketio AsyncServer under uvicorn, in the test's own event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import socketio

from .._socketio import serving


@pytest.fixture
async def live() -> AsyncIterator[tuple[socketio.AsyncServer, str]]:
    """A fresh AsyncServer served by uvicorn in this event loop; yields (server, base URL)."""
    sio = socketio.AsyncServer(async_mode="asgi", namespaces=["/", "/chat"])
    async with serving(sio) as base:
        yield sio, base

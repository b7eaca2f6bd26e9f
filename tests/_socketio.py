"""Helpers for the Socket.IO tests: read a live server's /metrics, connect real clients."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import httpx
import socketio
from prometheus_client.parser import text_string_to_metric_families

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

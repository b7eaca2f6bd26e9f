"""Starlette app for the end-to-end SQLAlchemy test: ``/q/{n}`` runs n statements per half.

Run with ``uvicorn --factory tests.apps.sqlalchemy_app:create_app``. Each request runs n
statements, waits until ``PEERS`` requests are in flight together (so their query counts must be
kept apart), then runs n more.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_perf import instrument
from asgi_perf.sqlalchemy import instrument_engine

PEERS = 2


def create_app() -> Starlette:
    # A file database, so each request gets its own pooled connection.
    path = Path(tempfile.mkdtemp()) / "app.sqlite"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    arrived = 0
    together = asyncio.Event()

    async def queries(request: Request) -> PlainTextResponse:
        nonlocal arrived
        n = int(request.path_params["n"])
        async with engine.connect() as conn:
            for _ in range(n):
                await conn.execute(text("SELECT 1"))
            arrived += 1
            if arrived >= PEERS:
                together.set()
            await asyncio.wait_for(together.wait(), timeout=10)
            for _ in range(n):
                await conn.execute(text("SELECT 2"))
        return PlainTextResponse(str(2 * n))

    async def ready(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/q/{n:int}", queries), Route("/", ready)])
    registry = instrument(app, exclude_paths=["/", "/metrics"])
    instrument_engine(engine, registry=registry, name="main")
    return app

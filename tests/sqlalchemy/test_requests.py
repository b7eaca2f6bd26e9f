"""Per-request query counts and time through the real HTTP middleware, and the N+1 signal."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from asgi_perf import PerfMiddleware, PerfRegistry
from asgi_perf.sqlalchemy import instrument_engine
from asgi_perf.sqlalchemy._stats import RequestQueries
from asgi_perf.testing import sample

from .._sqlalchemy import aiosqlite_engine

PER_REQUEST = "db_queries_per_request"


def bucket(registry: PerfRegistry, le: str, engine: str = "main") -> float | None:
    return sample(registry, PER_REQUEST, {"engine": engine, "le": le}, suffix="_bucket")


@pytest.mark.anyio
async def test_two_concurrent_requests_get_independent_counts(
    registry: PerfRegistry, tmp_path: Path
) -> None:
    """Two overlapping requests through PerfMiddleware: 4 and 10 statements, kept apart."""
    # A file database: one pooled connection per request (in-memory SQLite shares one).
    engine = aiosqlite_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    instrument_engine(engine, registry=registry, name="main")
    instrument_engine(aiosqlite_engine(), registry=registry, name="idle")
    arrived = 0
    together = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal arrived
        n = int(scope["path"].strip("/"))
        async with engine.connect() as conn:
            for _ in range(n):
                await conn.execute(text("SELECT 1"))
            arrived += 1
            if arrived == 2:
                together.set()
            await together.wait()  # both requests are now in flight at once
            for _ in range(n):
                await conn.execute(text("SELECT 2"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    transport = httpx.ASGITransport(app=PerfMiddleware(app, registry=registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = await asyncio.gather(client.get("/2"), client.get("/5"))
    assert [r.status_code for r in responses] == [200, 200]
    assert sample(registry, PER_REQUEST, {"engine": "main"}, suffix="_count") == 2
    assert sample(registry, PER_REQUEST, {"engine": "main"}, suffix="_sum") == 14
    assert bucket(registry, "2.0") == 0
    assert bucket(registry, "5.0") == 1
    assert bucket(registry, "10.0") == 2
    # The engine the requests never touched records two requests with zero statements.
    assert bucket(registry, "0.0", engine="idle") == 2
    spent = sample(registry, "db_time_per_request_seconds", {"engine": "main"}, suffix="_sum")
    assert spent is not None
    assert spent > 0
    await engine.dispose()


def test_hook_is_registered_once_per_registry(registry: PerfRegistry) -> None:
    """Instrumenting several engines adds exactly one request hook to the registry."""
    from sqlalchemy import create_engine

    instrument_engine(create_engine("sqlite://"), registry=registry, name="a")
    instrument_engine(create_engine("sqlite://"), registry=registry, name="b")
    hooks = [h for h in registry.request_hooks if isinstance(h, RequestQueries)]
    assert len(hooks) == 1


def test_statements_outside_requests_are_not_attributed(registry: PerfRegistry) -> None:
    """Statements run outside any HTTP request touch no per-request series; a stray finish is safe."""
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    instrument_engine(engine, registry=registry, name="main")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert sample(registry, PER_REQUEST, {"engine": "main"}, suffix="_count") is None
    hook = next(h for h in registry.request_hooks if isinstance(h, RequestQueries))
    state = hook.request_started()
    other = hook.request_started()
    hook.request_finished(state)  # out of order: falls back to clearing the variable
    hook.request_finished(other)
    assert sample(registry, PER_REQUEST, {"engine": "main"}, suffix="_count") == 2


@pytest.mark.anyio
async def test_repeated_select_in_one_request_logged_once_as_n_plus_one(
    registry: PerfRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """The same SELECT run n_plus_one_threshold times in one request is logged once, no params."""
    engine = aiosqlite_engine()
    instrument_engine(engine, registry=registry, name="main", n_plus_one_threshold=3)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async with engine.connect() as conn:
            for i in range(5):
                await conn.execute(text("SELECT :id"), {"id": f"secret-{i}"})
            await conn.execute(text("SELECT 'other'"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    transport = httpx.ASGITransport(app=PerfMiddleware(app, registry=registry))
    with caplog.at_level(logging.WARNING, logger="asgi_perf.sqlalchemy"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.get("/")
            await client.get("/")
    records = [r for r in caplog.records if "N+1" in r.getMessage()]
    assert len(records) == 1
    assert "SELECT ?" in records[0].getMessage()
    assert "secret" not in caplog.text
    await engine.dispose()


class CountingLock:
    """A lock that counts how often it is taken."""

    def __init__(self) -> None:
        self.taken = 0

    def __enter__(self) -> None:
        self.taken += 1

    def __exit__(self, *args: object) -> None:
        return None


def test_request_finished_takes_no_lock(
    registry: PerfRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finishing a request observes every engine (zero included) without taking any engine lock."""
    from sqlalchemy import create_engine

    from asgi_perf.sqlalchemy._stats import stats_for

    for name in ("a", "b", "c"):
        instrument_engine(create_engine("sqlite://"), registry=registry, name=name)
    locks = {}
    for name, series in stats_for(registry).engines.items():
        locks[name] = CountingLock()
        monkeypatch.setattr(series, "lock", locks[name])
    hook = next(h for h in registry.request_hooks if isinstance(h, RequestQueries))
    for _ in range(3):
        hook.request_finished(hook.request_started())
    assert [lock.taken for lock in locks.values()] == [0, 0, 0]
    for name in ("a", "b", "c"):
        assert bucket(registry, "0.0", engine=name) == 3


@pytest.mark.anyio
async def test_excluded_paths_are_not_counted_per_request(registry: PerfRegistry) -> None:
    """Requests to PerfMiddleware's exclude_paths (health checks, scrapes) add no per-request sample."""
    from sqlalchemy import create_engine

    instrument_engine(create_engine("sqlite://"), registry=registry, name="main")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = PerfMiddleware(app, registry=registry, exclude_paths=["/healthz"])
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for path in ("/healthz", "/healthz", "/work"):
            assert (await client.get(path)).status_code == 200
    assert sample(registry, PER_REQUEST, {"engine": "main"}, suffix="_count") == 1

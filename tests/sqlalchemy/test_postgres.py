"""asgi_perf.sqlalchemy against the real PostgreSQL server: psycopg (sync) and asyncpg (async)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import create_async_engine

from asgi_perf import PerfRegistry
from asgi_perf.sqlalchemy import instrument_engine
from asgi_perf.sqlalchemy._stats import SlowQueryLog, slow_log_for
from asgi_perf.testing import sample

from .._sqlalchemy import sa_url

pytestmark = pytest.mark.service("postgres")


def slow_list(registry: PerfRegistry) -> SlowQueryLog:
    return slow_log_for(registry)


def count(registry: PerfRegistry, operation: str, outcome: str) -> float:
    labels = {"engine": "pg", "operation": operation, "outcome": outcome}
    return sample(registry, "db_query_duration_seconds", labels, suffix="_count") or 0.0


def test_psycopg_sync_slow_error_executemany_and_pool(
    registry: PerfRegistry, postgres_dsn: str
) -> None:
    """psycopg: pg_sleep is slow, a unique violation is IntegrityError, executemany counts rows."""
    engine = create_engine(
        sa_url(postgres_dsn, "psycopg"), pool_size=1, max_overflow=0, pool_timeout=0.1
    )
    with engine.connect():
        pass  # the dialect's first-connect SELECTs run before we count (on a busy machine
        # they can be slower than the threshold too)
    handle = instrument_engine(engine, registry=registry, name="pg", slow_query_threshold=0.05)
    table = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE TEMP TABLE {table} (id int PRIMARY KEY)"))
            conn.execute(
                text(f"INSERT INTO {table} (id) VALUES (:id)"), [{"id": i} for i in range(30)]
            )
            conn.execute(text("SELECT pg_sleep(0.1)"))
            with pytest.raises(sa_exc.IntegrityError):
                conn.execute(text(f"INSERT INTO {table} (id) VALUES (1)"))
            with pytest.raises(sa_exc.TimeoutError):
                engine.connect()  # the only pooled connection is held by this block
        assert sample(registry, "db_rows_total", {"engine": "pg", "operation": "INSERT"}) == 30
        assert count(registry, "INSERT", "error") == 1
        assert (
            sample(registry, "db_query_errors_total", {"engine": "pg", "error": "IntegrityError"})
            == 1
        )
        assert (
            sample(registry, "db_slow_queries_total", {"engine": "pg", "operation": "SELECT"}) == 1
        )
        assert sample(registry, "db_pool_checkout_timeouts_total", {"engine": "pg"}) == 1
        assert sample(registry, "db_pool_size", {"engine": "pg"}) == 1
        # Any statement can be slow on a loaded machine (the failed INSERT is listed when it is):
        # the SELECTs listed are pg_sleep alone.
        slow = slow_list(registry).recent()
        assert [e["sql"] for e in slow if e["operation"] == "SELECT"] == ["SELECT pg_sleep(?)"]
    finally:
        handle.detach()
        engine.dispose()


@pytest.mark.anyio
async def test_asyncpg_slow_error_and_cancellation(
    registry: PerfRegistry, postgres_dsn: str
) -> None:
    """asyncpg: slow pg_sleep counted, bad SQL is ProgrammingError, a cancelled task is cancelled."""
    engine = create_async_engine(sa_url(postgres_dsn, "asyncpg"))
    async with engine.connect():
        pass  # the dialect's first-connect queries run before we count
    handle = instrument_engine(engine, registry=registry, name="pg", slow_query_threshold=0.05)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_sleep(0.1)"))
            with pytest.raises(sa_exc.ProgrammingError):
                await conn.execute(text("SELEKT 1"))
        assert count(registry, "SELECT", "ok") == 1
        assert count(registry, "OTHER", "error") == 1
        assert (
            sample(registry, "db_query_errors_total", {"engine": "pg", "error": "ProgrammingError"})
            == 1
        )

        started = asyncio.Event()

        async def long_query() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                started.set()
                await conn.execute(text("SELECT pg_sleep(5)"))

        task = asyncio.ensure_future(long_query())
        await started.wait()
        await asyncio.sleep(0.2)  # let pg_sleep reach the server; the outcome does not depend on it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert count(registry, "SELECT", "cancelled") == 1
        assert (
            sample(registry, "db_query_errors_total", {"engine": "pg", "error": "ProgrammingError"})
            == 1
        )
    finally:
        handle.detach()
        await engine.dispose()

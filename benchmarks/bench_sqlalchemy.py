"""SQLAlchemy: µs per statement, bare engine vs asgi-perf vs the FAQ recipe vs OpenTelemetry.

Usage: ./scripts/bench sqlalchemy [--rounds 9] [--n 3000] [--no-postgres]

Every contender gets its own engine on the same database; rounds are interleaved (each round runs
every contender once, in turn) and the table shows medians, so machine noise hits all alike.
PostgreSQL rows need the local server (ASGI_PERF_POSTGRES, default postgres@127.0.0.1/test).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy
from sqlalchemy import create_engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from asgi_perf import PerfRegistry
from asgi_perf.sqlalchemy import instrument_engine

STMT = text("SELECT 1")
PG = os.environ.get("ASGI_PERF_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def faq_recipe(engine: Any) -> None:
    """SQLAlchemy FAQ "Query Profiling": start times on conn.info, popped after execute."""

    @event.listens_for(engine, "before_cursor_execute")
    def before(
        conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any
    ) -> None:
        conn.info.setdefault("query_start_time", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any) -> None:
        time.perf_counter() - conn.info["query_start_time"].pop(-1)


def otel(engines: list[Any], *, force: bool) -> str:
    """Instrument with OpenTelemetry (SDK tracer, no exporter); returns a status note."""
    try:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return "not installed"
    instrumentor = SQLAlchemyInstrumentor()
    kwargs: dict[str, Any] = {"skip_dep_check": True} if force else {}
    sync = [getattr(e, "sync_engine", e) for e in engines]
    instrumentor.instrument(engines=sync, tracer_provider=TracerProvider(), **kwargs)
    # OTel hooks before/after_cursor_execute; on versions it does not support it attaches none.
    attached = any(bool(e.dispatch.before_cursor_execute) for e in sync)
    return "instrumented" if attached else "no-op: declares sqlalchemy < 2.1"


def _otel_reset() -> None:
    # The instrumentor is a process-wide singleton: undo it so the next database can use it.
    try:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    except ImportError:
        return
    instrumentor = SQLAlchemyInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def time_sync(engine: Any, n: int) -> float:
    with engine.connect() as conn:
        start = time.perf_counter()
        for _ in range(n):
            conn.execute(STMT).scalar()
        return (time.perf_counter() - start) / n * 1e6


async def time_async(engine: AsyncEngine, n: int) -> float:
    async with engine.connect() as conn:
        start = time.perf_counter()
        for _ in range(n):
            (await conn.execute(STMT)).scalar()
        return (time.perf_counter() - start) / n * 1e6


def contenders(make: Callable[[], Any]) -> dict[str, Any]:
    names = [
        "bare",
        "asgi-perf",
        "asgi-perf +stats",
        "FAQ recipe",
        "OTel (as shipped)",
        "OTel (forced)",
    ]
    engines = {name: make() for name in names}
    instrument_engine(engines["asgi-perf"], registry=PerfRegistry(), name="b")
    instrument_engine(
        engines["asgi-perf +stats"], registry=PerfRegistry(), name="b", statement_stats=True
    )
    faq_recipe(getattr(engines["FAQ recipe"], "sync_engine", engines["FAQ recipe"]))
    return engines


def run(label: str, make: Callable[[], Any], is_async: bool, rounds: int, n: int) -> list[str]:
    engines = contenders(make)
    notes = {"OTel (as shipped)": otel([engines["OTel (as shipped)"]], force=False)}
    notes["OTel (forced)"] = otel([engines["OTel (forced)"]], force=True)
    results: dict[str, list[float]] = {name: [] for name in engines}
    loop = asyncio.new_event_loop() if is_async else None
    for _ in range(rounds + 1):  # the first round warms up connections and caches
        for name, engine in engines.items():
            if loop is not None:
                results[name].append(loop.run_until_complete(time_async(engine, n)))
            else:
                results[name].append(time_sync(engine, n))
    bare = statistics.median(results["bare"][1:])
    rows = []
    for name, values in results.items():
        med = statistics.median(values[1:])
        note = notes.get(name, "")
        rows.append(
            f"| {label} | {name} | {med:.1f} | {med - bare:+.1f} | {med / bare:.2f}x | {note} |"
        )
    _otel_reset()
    for engine in engines.values():
        if loop is not None:
            loop.run_until_complete(engine.dispose())
        else:
            engine.dispose()
    if loop is not None:
        loop.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    print(
        f"SQLAlchemy {sqlalchemy.__version__}; {args.rounds} interleaved rounds x {args.n} "
        "statements; median µs per `SELECT 1`\n"
    )
    print("| database | contender | µs/query | added µs | ratio | note |")
    print("|---|---|---|---|---|---|")
    cases: list[tuple[str, Callable[[], Any], bool]] = [
        ("SQLite sync", lambda: create_engine("sqlite://"), False),
        ("SQLite aiosqlite", lambda: create_async_engine("sqlite+aiosqlite://"), True),
    ]
    if not args.no_postgres:
        sync_url = PG.replace("postgresql://", "postgresql+psycopg://", 1)
        async_url = PG.replace("postgresql://", "postgresql+asyncpg://", 1)
        cases += [
            ("PostgreSQL psycopg", lambda: create_engine(sync_url), False),
            ("PostgreSQL asyncpg", lambda: create_async_engine(async_url), True),
        ]
    for label, make, is_async in cases:
        for row in run(label, make, is_async, args.rounds, args.n):
            print(row, flush=True)


if __name__ == "__main__":
    main()

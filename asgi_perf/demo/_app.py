"""``asgi-perf demo``: one example app with every instrument on.

HTTP middleware, a python-socketio ``AsyncServer`` with a :class:`~asgi_perf.socketio.Batcher`
feeding a room, SQLAlchemy (async, SQLite in a temporary directory) with a deliberately slow
report query, metered caches in front of the database reads, and the operations layer (monitor,
alerts, dashboard). ``uvicorn --factory asgi_perf.demo:create_app`` serves the same app.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import PerfRegistry

#: The room every demo Socket.IO client joins; the batcher feeds it price ticks and new orders.
ROOM = "live"
PRODUCTS = 500
CATEGORIES = ("books", "games", "garden", "kitchen", "music", "office", "sports", "toys")
#: Statements at least this long count as slow; ``/reports/sales`` sleeps 150-400 ms in SQLite.
SLOW_QUERY_THRESHOLD = 0.1
#: Seconds between monitor samples: short, so the dashboard moves and demo alerts fire quickly.
MONITOR_INTERVAL = 1.0
TICK_SECONDS = 0.02


def demo_rules() -> list[Any]:
    """The default alert rules plus two that the demo's traffic trips within seconds."""
    from ..operations import DEFAULT_RULES, AlertRule

    return [
        *DEFAULT_RULES,
        AlertRule(
            "DemoSlowQueries",
            "db.slow_per_minute",
            ">",
            10,
            2,
            "warning",
            "/reports/sales runs a deliberately slow query",
        ),
        AlertRule("DemoErrors", "http.error_rate", ">", 0.01, 2, "critical", "/error always fails"),
    ]


class DemoFailure(RuntimeError):
    """What ``/error`` raises: recorded as a 500 with its duration, and kept out of the log."""


def _sleep_ms(ms: float) -> int:
    # Runs inside SQLite (in aiosqlite's worker thread), so it blocks the query, not the loop.
    time.sleep(max(0.0, float(ms)) / 1000)
    return 1


@dataclass
class Demo:
    """Everything :func:`build_demo` wired together; ``app`` is the ASGI app to serve."""

    registry: PerfRegistry
    app: Any
    web: Any
    sio: Any
    batcher: Any
    engine: Any
    ops: Any
    workdir: Path
    alerts: list[dict[str, Any]] = field(default_factory=list)
    members: set[str] = field(default_factory=set)


def build_demo(
    registry: PerfRegistry | None = None,
    workdir: Path | None = None,
    on_alert: Callable[[dict[str, Any]], None] | None = None,
) -> Demo:
    """Build the demo app (nothing runs until the ASGI lifespan starts it).

    :param workdir: where the SQLite file goes (default: a temporary directory, removed at
        shutdown).
    :param on_alert: also called with every alert notification (firing and resolved).
    """
    import socketio
    from sqlalchemy import event, text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import AsyncAdaptedQueuePool
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from ..cache import LRUCache, TTLCache, cached
    from ..http import instrument
    from ..operations import CallbackNotifier, enable
    from ..socketio import SOCKETIO_PATH_PATTERN, Batcher, instrument_socketio
    from ..sqlalchemy import instrument_engine

    registry = registry if registry is not None else PerfRegistry()
    owned = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="asgi-perf-demo-")) if workdir is None else workdir
    # A queue pool named outright: early SQLAlchemy 2.0 releases give aiosqlite files a NullPool,
    # which keeps no counts, and the demo should show the pool figures on every version.
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{workdir / 'demo.sqlite'}", poolclass=AsyncAdaptedQueuePool
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _functions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("demo_sleep", 1, _sleep_ms)
        # WAL: the slow report (a reader) must not hold up the order inserts, nor a waiting
        # writer every new reader, as SQLite's default rollback journal would.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    instrument_engine(
        engine, registry=registry, name="demo", slow_query_threshold=SLOW_QUERY_THRESHOLD
    )

    # 64 of 500 products fit: the popular ones stay, the long tail is evicted for capacity.
    products: TTLCache[Any, Any] = TTLCache(maxsize=64, ttl=30, name="products", registry=registry)
    categories: LRUCache[Any, Any] = LRUCache(maxsize=16, name="categories", registry=registry)

    async def fetch_product(product_id: int) -> dict[str, Any] | None:
        async with engine.connect() as conn:
            result = await conn.execute(
                text("SELECT id, name, category, price FROM products WHERE id = :id"),
                {"id": product_id},
            )
            row = result.mappings().first()
        return None if row is None else dict(row)

    load_product = cached(products)(fetch_product)

    @cached(categories)
    async def load_category(category: str) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT id, name, price FROM products WHERE category = :category "
                    "ORDER BY price LIMIT 20"
                ),
                {"category": category},
            )
            return [dict(row) for row in result.mappings()]

    def product_response(row: dict[str, Any] | None) -> Response:
        if row is None:
            return JSONResponse({"error": "no such product"}, status_code=404)
        return JSONResponse(row)

    async def index(request: Request) -> Response:
        links = "".join(
            f'<li><a href="{path}">{path}</a></li>'
            for path in (
                "/metrics/dashboard",
                "/metrics/summary",
                "/metrics",
                "/products/1",
                "/products/1/fresh",
                "/categories/books",
                "/search?q=blue",
                "/reports/sales",
            )
        )
        return HTMLResponse(f"<h1>asgi-perf demo</h1><ul>{links}</ul>")

    async def product(request: Request) -> Response:
        return product_response(await load_product(request.path_params["product_id"]))

    async def product_fresh(request: Request) -> Response:
        return product_response(await fetch_product(request.path_params["product_id"]))

    async def category(request: Request) -> Response:
        name = request.path_params["category"]
        if name not in CATEGORIES:
            return JSONResponse({"error": "no such category"}, status_code=404)
        return JSONResponse(await load_category(name))

    async def search(request: Request) -> Response:
        words = request.query_params.get("q", "")[:40]
        async with engine.connect() as conn:
            result = await conn.execute(
                text("SELECT id, name FROM products WHERE name LIKE :pattern LIMIT 10"),
                {"pattern": f"%{words}%"},
            )
            return JSONResponse([dict(row) for row in result.mappings()])

    async def sales_report(request: Request) -> Response:
        with registry.timer("reports.sales"):
            async with engine.connect() as conn:
                result = await conn.execute(
                    text(
                        "SELECT demo_sleep(:ms) AS waited, count(*) AS orders, "
                        "coalesce(sum(o.qty * p.price), 0) AS revenue "
                        "FROM orders o JOIN products p ON p.id = o.product_id"
                    ),
                    {"ms": random.uniform(150, 400)},  # noqa: S311 - demo latency, not crypto
                )
                row = result.mappings().one()
        return JSONResponse({"orders": row["orders"], "revenue": round(row["revenue"], 2)})

    async def create_order(request: Request) -> Response:
        try:
            body = await request.json()
            product_id, qty = int(body["product_id"]), int(body.get("qty", 1))
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "expected {product_id, qty}"}, status_code=422)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO orders (product_id, qty, created) VALUES (:product_id, :qty, :t)"
                ),
                {"product_id": product_id, "qty": qty, "t": time.time()},
            )
        registry.count("orders_placed")
        await batcher.emit("order", {"product_id": product_id, "qty": qty}, room=ROOM)
        return JSONResponse({"product_id": product_id, "qty": qty}, status_code=201)

    async def error(request: Request) -> Response:
        raise DemoFailure("demo failure")

    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[])
    instrument_socketio(sio, registry=registry)
    batcher = Batcher(sio, registry=registry, max_items=50, max_delay=0.1)
    members: set[str] = set()

    async def on_join(sid: str, room: Any = None) -> dict[str, Any]:
        await sio.enter_room(sid, ROOM)
        members.add(sid)
        return {"room": ROOM}

    async def on_chat(sid: str, message: Any) -> None:
        await batcher.emit("chat", {"from": sid[:6], "text": str(message)[:200]}, room=ROOM)

    async def on_disconnect(sid: str, reason: Any = None) -> None:
        members.discard(sid)

    sio.on("join", on_join)
    sio.on("chat", on_chat)
    sio.on("disconnect", on_disconnect)

    async def ticker() -> None:
        # Publish only while someone listens: an idle demo keeps its figures still.
        rng = random.Random()  # noqa: S311 - demo data, not crypto
        while True:
            await asyncio.sleep(TICK_SECONDS)
            if members:
                item = {"id": rng.randint(1, PRODUCTS), "price": round(rng.uniform(1, 100), 2)}
                await batcher.emit("price", item, room=ROOM)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await _create_schema(engine)
        task = asyncio.create_task(ticker())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await batcher.aclose()  # flush what is pending: nothing is lost on shutdown
            await engine.dispose()
            if owned:
                shutil.rmtree(workdir, ignore_errors=True)

    web = Starlette(
        routes=[
            Route("/", index),
            Route("/products/{product_id:int}", product),
            Route("/products/{product_id:int}/fresh", product_fresh),
            Route("/categories/{category}", category),
            Route("/search", search),
            Route("/reports/sales", sales_report),
            Route("/orders", create_order, methods=["POST"]),
            Route("/error", error),
        ],
        lifespan=lifespan,
    )
    # Socket.IO's long-polling requests would otherwise dominate the HTTP latency histograms.
    instrument(web, registry=registry, exclude_patterns=[SOCKETIO_PATH_PATTERN])
    seen: list[dict[str, Any]] = []

    def record(alert: dict[str, Any]) -> None:
        seen.append(alert)
        if on_alert is not None:
            on_alert(alert)

    ops = enable(
        web,
        registry,
        interval=MONITOR_INTERVAL,
        rules=demo_rules(),
        notifiers=[CallbackNotifier(record, name="demo")],
    )
    # Engine.IO answers /socket.io/ itself and hands everything else, lifespan included, to web.
    app = socketio.ASGIApp(sio, other_asgi_app=web)
    return Demo(
        registry=registry,
        app=app,
        web=web,
        sio=sio,
        batcher=batcher,
        engine=engine,
        ops=ops,
        workdir=workdir,
        alerts=seen,
        members=members,
    )


async def _create_schema(engine: Any) -> None:
    from sqlalchemy import text

    rng = random.Random(7)  # noqa: S311 - the same catalogue on every run
    rows = [
        {
            "id": i,
            "name": f"{rng.choice(('red', 'blue', 'green', 'small', 'large'))} item {i}",
            "category": CATEGORIES[i % len(CATEGORIES)],
            "price": round(rng.uniform(1, 100), 2),
        }
        for i in range(1, PRODUCTS + 1)
    ]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS products (id INTEGER PRIMARY KEY, name TEXT, "
                "category TEXT, price REAL)"
            )
        )
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, product_id INTEGER, "
                "qty INTEGER, created REAL)"
            )
        )
        await conn.execute(text("DELETE FROM products"))
        await conn.execute(
            text(
                "INSERT INTO products (id, name, category, price) "
                "VALUES (:id, :name, :category, :price)"
            ),
            rows,
        )


def create_app() -> Any:
    """The demo app for ``uvicorn --factory asgi_perf.demo:create_app``."""
    return build_demo().app

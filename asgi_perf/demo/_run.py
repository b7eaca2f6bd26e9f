"""Serve the demo, generate traffic (HTTP and Socket.IO) with a progress line, print a report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from .._histogram import quantile
from ..registry import PerfRegistry
from ._app import CATEGORIES, PRODUCTS, ROOM, SLOW_QUERY_THRESHOLD, Demo, DemoFailure, build_demo

#: Weighted request mix: mostly cached reads, some uncached and slow ones, errors and 404s.
MIX: tuple[tuple[str, int], ...] = (
    ("product", 45),
    ("product_fresh", 10),
    ("category", 15),
    ("search", 8),
    ("order", 8),
    ("report", 4),
    ("error", 3),
    ("missing", 7),
)
SOCKET_CLIENTS = 3
CHAT_EVERY = 0.25
#: Pause between requests of the light background load a plain ``demo`` run sends (~4 per second).
BACKGROUND_PAUSE = 0.25
PROGRESS_EVERY = 0.5
ERR_DURATION = "--duration must be a positive number of seconds, got {!r}"
ERR_CONCURRENCY = "--concurrency must be at least 1, got {!r}"


@dataclass
class Traffic:
    """What the load generator did, as seen from the clients."""

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0
    sockets: int = 0
    socket_errors: int = 0
    chats_sent: int = 0
    received: dict[str, int] = field(default_factory=dict)


def _product_id(rng: random.Random) -> int:
    # Skewed popularity, as in a real shop: a few products get most reads (cache hits), the rest
    # are a long tail (misses, and capacity evictions once the cache is full).
    if rng.random() < 0.15:
        return rng.randint(1, PRODUCTS)
    return min(PRODUCTS, int(rng.paretovariate(1.2)))


async def _http_worker(
    client: Any, deadline: float, traffic: Traffic, rng: random.Random, pause: float = 0.0
) -> None:
    import httpx

    kinds, weights = zip(*MIX, strict=True)
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        try:
            if kind == "order":
                body = {"product_id": _product_id(rng), "qty": rng.randint(1, 3)}
                response = await client.post("/orders", json=body)
            else:
                response = await client.get(_path(kind, rng))
        except httpx.TransportError:
            traffic.transport_errors += 1
            continue
        traffic.requests += 1
        traffic.by_status[response.status_code] = traffic.by_status.get(response.status_code, 0) + 1
        if pause:
            await asyncio.sleep(pause)


def _path(kind: str, rng: random.Random) -> str:
    if kind == "product":
        return f"/products/{_product_id(rng)}"
    if kind == "product_fresh":
        return f"/products/{rng.randint(1, PRODUCTS)}/fresh"
    if kind == "category":
        return f"/categories/{rng.choice(CATEGORIES)}"
    if kind == "search":
        return f"/search?q={rng.choice(('red', 'blue', 'item 4', 'large'))}"
    if kind == "report":
        return "/reports/sales"
    if kind == "error":
        return "/error"
    return f"/missing/{rng.randint(1, 10_000)}"


async def _socket_client(base: str, deadline: float, traffic: Traffic, number: int) -> None:
    import socketio

    from ..socketio import unbatch

    client = socketio.AsyncClient(reconnection=False)
    unbatch(client)  # batched payloads arrive at the handlers below one by one, in order

    def counter(event: str) -> Callable[[Any], None]:
        def handler(data: Any) -> None:
            traffic.received[event] = traffic.received.get(event, 0) + 1

        return handler

    for event in ("price", "order", "chat"):
        client.on(event, counter(event))
    try:
        await client.connect(base, transports=["websocket"], wait_timeout=10)
        await client.call("join", ROOM, timeout=10)
        traffic.sockets += 1
        while time.monotonic() < deadline:
            await client.emit("chat", f"hello from client {number}")
            traffic.chats_sent += 1
            await asyncio.sleep(CHAT_EVERY)
    except (socketio.exceptions.SocketIOError, OSError):
        traffic.socket_errors += 1
    finally:
        await client.disconnect()


async def generate(
    base: str,
    duration: float,
    concurrency: int,
    out: TextIO,
    status: Callable[[], str] = lambda: "",
    socket_clients: int = SOCKET_CLIENTS,
) -> Traffic:
    """``concurrency`` HTTP clients and ``socket_clients`` Socket.IO clients for ``duration`` s."""
    import httpx

    traffic = Traffic()
    deadline = time.monotonic() + duration
    rng = random.Random()  # noqa: S311 - load mix, not crypto

    async def progress() -> None:
        while True:
            left = max(0.0, deadline - time.monotonic())
            received = sum(traffic.received.values())
            out.write(
                f"\r  {traffic.requests:6d} requests | {traffic.sockets} Socket.IO clients, "
                f"{received:6d} items received{status()} | {left:4.1f}s left "
            )
            out.flush()
            await asyncio.sleep(PROGRESS_EVERY)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        ticker = asyncio.create_task(progress())
        try:
            await asyncio.gather(
                *(_http_worker(client, deadline, traffic, rng) for _ in range(concurrency)),
                *(_socket_client(base, deadline, traffic, n) for n in range(socket_clients)),
            )
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    out.write("\n")
    return traffic


async def background(base: str) -> Traffic:
    """Light load until cancelled: one paced HTTP client and one Socket.IO client.

    A plain ``demo`` run sends it so the dashboard has something to show on first open.
    """
    import httpx

    traffic = Traffic()
    rng = random.Random()  # noqa: S311 - load mix, not crypto
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await asyncio.gather(
            _http_worker(client, math.inf, traffic, rng, BACKGROUND_PAUSE),
            _socket_client(base, math.inf, traffic, 0),
        )
    return traffic  # pragma: no cover - only cancellation ends it


def route_table(registry: PerfRegistry) -> list[dict[str, Any]]:
    """Per route since start: requests, 5xx, mean and p95 (interpolated from the buckets)."""
    name = registry.metric_name("http_request_duration_seconds")
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for family in registry.prometheus.collect():
        if family.name != name:
            continue
        for s in family.samples:
            key = (s.labels["method"], s.labels["route"])
            row = rows.setdefault(key, {"count": 0.0, "sum": 0.0, "errors": 0.0, "buckets": {}})
            if s.name.endswith("_count"):
                row["count"] += s.value
                if s.labels["status"].startswith("5"):
                    row["errors"] += s.value
            elif s.name.endswith("_sum"):
                row["sum"] += s.value
            elif s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                row["buckets"][le] = row["buckets"].get(le, 0.0) + s.value
    table = []
    for (method, route), row in sorted(rows.items(), key=lambda kv: -kv[1]["count"]):
        table.append(
            {
                "method": method,
                "route": route,
                "requests": int(row["count"]),
                "errors": int(row["errors"]),
                "mean": row["sum"] / row["count"] if row["count"] else 0.0,
                "p95": quantile(0.95, sorted(row["buckets"].items())),
            }
        )
    return table


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def report(demo: Demo, traffic: Traffic | None = None) -> str:
    """The closing report: routes, database, caches, Socket.IO and alerts."""
    registry = demo.registry
    summary = registry.summary()
    lines = ["HTTP (since start)"]
    lines.append(
        f"  {'method':7} {'route':30} {'requests':>9} {'5xx':>6} {'mean ms':>9} {'p95 ms':>9}"
    )
    lines.extend(
        f"  {r['method']:7} {r['route']:30} {r['requests']:9d} {r['errors']:6d} "
        f"{_ms(r['mean']):>9} {_ms(r['p95']):>9}"
        for r in route_table(registry)
    )
    lines.append("Database")
    lines.extend(
        f"  engine {engine['engine']}: {engine['queries']} queries, {engine['errors']} errors, "
        f"{engine['slow']} slow (>= {SLOW_QUERY_THRESHOLD * 1000:.0f} ms)"
        for engine in summary["db"]["engines"]
    )
    lines.extend(
        f"    slow x{slow['count']:<5d} p95 {_ms(slow['p95']):>9}  max {_ms(slow['max']):>9}  "
        f"{slow['sql'][:70]}"
        for slow in summary["db"]["slow_query_groups"][:3]
    )
    lines.append("Caches")
    for cache in summary["cache"]["caches"]:
        ratio = cache["hit_ratio"]
        shown = "-" if ratio is None else f"{ratio * 100:.1f}%"
        evicted = sum((cache.get("evictions") or {}).values())
        lines.append(
            f"  {cache['cache']:12} hit ratio {shown:>6}  ({cache['hits']} hits, "
            f"{cache['misses']} misses), {cache['entries']} entries, {evicted:.0f} evicted"
        )
    sio = summary["socketio"]
    lines.append("Socket.IO")
    lines.append(
        f"  {sum(sio['connects'].values()):.0f} connects, {sio['events_received']:.0f} events in, "
        f"{sio['events_emitted']:.0f} out, {sio['batches']:.0f} batches "
        f"({_avg(sio['batch_items_avg'])} items each), "
        f"{sum(sio['batch_dropped'].values()):.0f} dropped"
    )
    if traffic is not None:
        received = ", ".join(f"{n} {event}" for event, n in sorted(traffic.received.items()))
        lines.append(
            f"  {traffic.sockets} clients received {received or 'nothing'} "
            f"(after unbatching; {traffic.socket_errors} client errors)"
        )
    firing = summary["alerts"]["firing"]
    lines.append(f"Alerts firing: {len(firing)}")
    lines.extend(
        f"  {a['rule']} ({a['severity']}): {a['metric']} = {_num(a['value'])}" for a in firing
    )
    return "\n".join(lines)


def _avg(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"


async def serve(
    host: str,
    port: int,
    traffic: bool,
    duration: float,
    concurrency: int,
    out: TextIO,
    on_started: Callable[[Any], Awaitable[None]] | None = None,
    *,
    background_traffic: bool = False,
) -> int:
    """Serve the demo; with ``traffic``, load it, print the report and stop.

    Without ``traffic`` it serves until stopped, sending itself light load when
    ``background_traffic`` is on. ``on_started(server)`` runs once the server listens (tests
    stop a serve-only run with it).
    """

    demo = build_demo()
    # uvicorn logs every exception an app raises; /error raising is the point, not news.
    log = logging.getLogger("uvicorn.error")
    quiet = _DropDemoFailures()
    log.addFilter(quiet)
    try:
        return await _run(
            demo, host, port, traffic, duration, concurrency, out, on_started, background_traffic
        )
    finally:
        log.removeFilter(quiet)


async def _run(
    demo: Demo,
    host: str,
    port: int,
    traffic: bool,
    duration: float,
    concurrency: int,
    out: TextIO,
    on_started: Callable[[Any], Awaitable[None]] | None,
    background_traffic: bool,
) -> int:
    import uvicorn

    config = uvicorn.Config(demo.app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(_until_stopped(server))
    while not server.started:
        if task.done():  # could not bind, or the lifespan failed: uvicorn logged why
            return task.result()
        await asyncio.sleep(0.05)
    base = f"http://{host}:{port}"
    out.write(
        "asgi-perf demo is running:\n"
        f"  app        {base}/\n"
        f"  dashboard  {base}/metrics/dashboard\n"
        f"  summary    {base}/metrics/summary\n"
        f"  metrics    {base}/metrics\n"
        f"  Socket.IO  {base}/socket.io/ (room {ROOM!r})\n"
    )
    try:
        if not traffic:
            load = None
            if background_traffic:
                out.write(
                    "Sending itself light traffic (~4 requests/s, one Socket.IO client) so the "
                    "dashboard has data; --no-background-traffic turns it off.\n"
                )
                load = asyncio.create_task(background(base))
            out.write("Press Ctrl-C to stop.\n")
            out.flush()
            try:
                if on_started is not None:
                    await on_started(server)
                await task
            finally:
                if load is not None:
                    load.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await load
            return 0
        out.write(
            f"Generating traffic for {duration:g}s: {concurrency} HTTP clients, "
            f"{SOCKET_CLIENTS} Socket.IO clients\n"
        )

        def status() -> str:
            alerts = demo.ops.alerts
            count = sum(1 for a in alerts.states() if a["state"] == "firing") if alerts else 0
            return f" | {count} alerts firing"

        # The report lists the slow queries; their log lines would break the progress line.
        sql_log = logging.getLogger("asgi_perf.sqlalchemy")
        level = sql_log.level
        sql_log.setLevel(logging.ERROR)
        try:
            sent = await generate(base, duration, concurrency, out, status)
        finally:
            sql_log.setLevel(level)
        out.write(f"Sent {sent.requests} requests ({_statuses(sent)}).\n\n")
        out.write(report(demo, sent) + "\n")
        return 0
    finally:
        server.should_exit = True
        await task


async def _until_stopped(server: Any) -> int:
    # uvicorn ends a failed start with sys.exit(); caught here, inside the task, it becomes our
    # exit code instead of escaping the event loop (asyncio re-raises a task's SystemExit).
    try:
        await server.serve()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) and exc.code else 1
    return 0


class _DropDemoFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DemoFailure))


def _statuses(traffic: Traffic) -> str:
    return ", ".join(f"{n} x {code}" for code, n in sorted(traffic.by_status.items()))


def run_demo(
    *,
    host: str,
    port: int,
    traffic: bool,
    duration: float,
    concurrency: int,
    out: TextIO | None = None,
    background_traffic: bool = True,
) -> int:
    import sys

    if not duration > 0 or duration == float("inf"):
        raise ValueError(ERR_DURATION.format(duration))
    if concurrency < 1:
        raise ValueError(ERR_CONCURRENCY.format(concurrency))
    try:
        return asyncio.run(
            serve(
                host,
                port,
                traffic,
                duration,
                concurrency,
                out or sys.stdout,
                background_traffic=background_traffic,
            )
        )
    except KeyboardInterrupt:  # pragma: no cover - interactive stop
        return 0

"""``asgi-perf demo``: an example app with the instruments on, optional traffic and a report."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from .registry import PerfRegistry


def build_app(registry: PerfRegistry) -> Any:
    """The demo Starlette app: a few routes of each kind, instrumented into ``registry``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route

    from ._integration import instrument

    async def index(request: Request) -> Response:
        links = "".join(
            f'<li><a href="{path}">{path}</a></li>'
            for path in ("/metrics", "/items/1", "/api/v1/users/7", "/slow", "/stream")
        )
        return HTMLResponse(f"<h1>asgi-perf demo</h1><ul>{links}</ul>")

    async def item(request: Request) -> Response:
        return JSONResponse({"id": request.path_params["item_id"]})

    async def create_item(request: Request) -> Response:
        body = await request.body()
        return JSONResponse({"received": len(body)}, status_code=201)

    async def slow(request: Request) -> Response:
        await asyncio.sleep(random.uniform(0.05, 0.3))  # noqa: S311 - demo latency, not crypto
        return JSONResponse({"slow": True})

    async def stream(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(10):
                await asyncio.sleep(0.005)
                yield f"chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    async def error(request: Request) -> Response:
        raise RuntimeError("demo failure")

    async def user(request: Request) -> Response:
        return JSONResponse({"user": request.path_params["user_id"]})

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/items/{item_id:int}", item),
            Route("/items", create_item, methods=["POST"]),
            Route("/slow", slow),
            Route("/stream", stream),
            Route("/error", error),
            Mount("/api/v1", routes=[Route("/users/{user_id}", user)]),
        ]
    )
    instrument(app, registry=registry)
    return app


async def _traffic(base: str, duration: float, concurrency: int) -> int:
    import httpx

    sent = 0
    deadline = time.monotonic() + duration
    paths = ["/items/{}", "/api/v1/users/{}", "/slow", "/stream", "/error", "/missing/{}"]
    weights = [50, 25, 8, 8, 2, 7]

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while time.monotonic() < deadline:
            path = random.choices(paths, weights)[0].format(random.randint(1, 500))  # noqa: S311
            if random.random() < 0.1:  # noqa: S311
                await client.post("/items", content=b"x" * random.randint(10, 5000))  # noqa: S311
            else:
                await client.get(path)
            sent += 1

    async def progress() -> None:
        while True:
            left = max(0.0, deadline - time.monotonic())
            sys.stdout.write(f"\r  traffic: {sent:6d} requests, {left:4.1f}s left ")
            sys.stdout.flush()
            await asyncio.sleep(0.5)

    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        ticker = asyncio.create_task(progress())
        try:
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    sys.stdout.write("\n")
    return sent


def report(registry: PerfRegistry) -> str:
    """A short per-route table: requests, errors, mean and p95 duration (from the buckets)."""
    from ._histogram import quantile

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
    lines = [f"{'method':7} {'route':28} {'requests':>9} {'5xx':>6} {'mean ms':>9} {'p95 ms':>9}"]
    for (method, route), row in sorted(rows.items(), key=lambda kv: -kv[1]["count"]):
        mean = row["sum"] / row["count"] * 1000 if row["count"] else 0.0
        p95 = quantile(0.95, sorted(row["buckets"].items())) * 1000
        lines.append(
            f"{method:7} {route:28} {int(row['count']):9d} {int(row['errors']):6d} "
            f"{mean:9.1f} {p95:9.1f}"
        )
    return "\n".join(lines)


async def _serve(host: str, port: int, traffic: bool, duration: float, concurrency: int) -> int:
    import uvicorn

    registry = PerfRegistry()
    app = build_app(registry)
    config = uvicorn.Config(app, host=host, port=port, log_level="critical", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            return 1
        await asyncio.sleep(0.05)
    base = f"http://{host}:{port}"
    print("asgi-perf demo is running:")
    print(f"  app      {base}/")
    print(f"  metrics  {base}/metrics")
    if not traffic:
        print("Press Ctrl-C to stop.")
        await task
        return 0
    print(f"Generating traffic for {duration:g}s with {concurrency} clients...")
    sent = await _traffic(base, duration, concurrency)
    print(f"Sent {sent} requests.\n")
    print(report(registry))
    server.should_exit = True
    await task
    return 0


def run_demo(*, host: str, port: int, traffic: bool, duration: float, concurrency: int) -> int:
    try:
        return asyncio.run(_serve(host, port, traffic, duration, concurrency))
    except KeyboardInterrupt:  # pragma: no cover - interactive stop
        return 0

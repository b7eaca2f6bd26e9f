"""The package's own endpoints (/metrics and the operations endpoints) stay out of the app's
HTTP metrics unless asked for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_perf import PerfMiddleware, PerfRegistry, instrument, metrics_app
from asgi_perf.testing import samples

pytestmark = pytest.mark.anyio

OWN = [
    "/metrics",
    "/metrics/summary",
    "/metrics/history?limit=5",
    "/metrics/alerts",
    "/metrics/dashboard?refresh=10",
    "/metrics/dashboard.js",
    "/metrics/dashboard.css",
]


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def routes(registry: PerfRegistry) -> set[str]:
    return {s["route"] for s in samples(registry, "http_requests_total")}


def in_progress(registry: PerfRegistry) -> float:
    name = registry.metric_name("http_requests_in_progress")
    return sum(s.value for f in registry.prometheus.collect() for s in f.samples if s.name == name)


async def get_all(app: Any, paths: list[str], headers: dict[str, str] | None = None) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in paths:
            await client.get(path, headers=headers)


async def test_instrument_leaves_its_own_routes_out() -> None:
    """instrument(app, operations=True): the metrics and every operations endpoint (allowed or
    refused) are not recorded; the app's route is; nothing is left in progress."""
    app = Starlette(routes=[Route("/hello", hello)])
    registry = instrument(app, operations=True, metrics_options={"basic_auth": ("u", "p")})
    await get_all(app, [*OWN, "/hello"])  # refused: 401
    await get_all(app, OWN, headers={"Authorization": "Basic dTpw"})
    assert routes(registry) == {"/hello"}
    assert in_progress(registry) == 0


async def test_hand_wired_metrics_app_is_left_out() -> None:
    """A metrics app routed by hand behind add_middleware(PerfMiddleware) is left out too: the
    metrics app marks the requests it serves."""
    registry = PerfRegistry()
    app = Starlette(routes=[Route("/hello", hello), Route("/prom", metrics_app(registry))])
    app.add_middleware(PerfMiddleware, registry=registry)
    await get_all(app, ["/prom", "/prom", "/hello"])
    assert routes(registry) == {"/hello"}


@pytest.mark.parametrize("wiring", ["instrument", "add_middleware"])
async def test_record_own_endpoints_puts_them_back(wiring: str) -> None:
    """record_own_endpoints=True records the package's own endpoints like any route."""
    app = Starlette(routes=[Route("/hello", hello)])
    if wiring == "instrument":
        registry = instrument(app, operations=True, record_own_endpoints=True)
    else:
        registry = PerfRegistry()
        app.router.routes.append(Route("/metrics", metrics_app(registry)))
        app.add_middleware(PerfMiddleware, registry=registry, record_own_endpoints=True)
    await get_all(app, ["/metrics", "/hello"])
    assert routes(registry) == {"/metrics", "/hello"}


class Broken:
    """A collector whose scrape raises."""

    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("broken collector")


async def test_own_endpoint_that_raises_is_left_out() -> None:
    """A metrics app that raises (a broken collector) is still the package's own traffic: the
    error reaches the app's error handling but not the app's HTTP metrics."""
    registry = PerfRegistry()
    broken = CollectorRegistry()
    broken.register(Broken())
    metrics = metrics_app(broken, render_in_thread=False)
    app = Starlette(routes=[Route("/hello", hello), Route("/metrics", metrics)])
    app.add_middleware(PerfMiddleware, registry=registry)
    await get_all(app, ["/metrics", "/hello"])
    assert routes(registry) == {"/hello"}
    assert in_progress(registry) == 0

"""The whole exposition of an app with every instrument on, linted by Prometheus' promtool.

One real uvicorn app (tests/apps/full_app.py) with HTTP, SQLAlchemy on SQLite, Socket.IO with a
batcher, metered caches, a Redis tier, timers, the monitor, alerts and system figures; real traffic
from httpx and a python-socketio client; then /metrics in both formats through promtool.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import socketio
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

from asgi_perf.catalogue import CATALOGUE
from asgi_perf.compat import HIGHR_METRIC
from asgi_perf.socketio import unbatch

from .._server import serve_app
from ..conftest import need_service, port_open

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.service("promtool"),
    pytest.mark.service("redis"),
    pytest.mark.slow,
]

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
#: A sample of every component; the scrape is taken once all of them are there.
NEEDLES = (
    'http_requests_total{method="GET",route="/products/{product_id}",status="200"}',
    'http_exceptions_total{exception="DemoFailure",method="GET",route="/error"}',
    'http_request_size_bytes_count{method="POST",route="/orders"}',
    'db_query_duration_seconds_bucket{engine="demo",le="+Inf",operation="SELECT",outcome="ok"}',
    'db_pool_checked_out{engine="demo"}',
    'cache_requests_total{cache="products",result="hit"}',
    'cache_requests_total{cache="products",result="miss"}',
    'cache_evictions_total{cache="products",reason="capacity"}',
    'cache_requests_total{cache="tiered",result="hit"}',
    'cache_tier_requests_total{cache="tiered",result="miss",tier="redis"}',
    'socketio_connections{namespace="/",transport="websocket"}',
    'socketio_events_received_total{event="chat",namespace="/"}',
    'socketio_batches_total{event="chat"',
    "socketio_queued_packets ",
    'app_timer_duration_seconds_count{name="reports.sales"}',
    'app_events_total{name="orders_placed"}',
    "asgi_perf_alerts_firing{",
    "system_process_resident_bytes ",
)
#: Families only a fault, an open circuit breaker or a Redis outage labels: a healthy app has
#: none, and a family without samples is not exposed.
FAULT_ONLY = {
    "asgi_perf_instrumentation_errors",
    "asgi_perf_series_overflow",
    "cache_redis_errors",
    "cache_redis_skipped",
    "cache_redis_fallbacks",
}


def openmetrics_families(text: str) -> list[Metric]:
    """Every family of an OpenMetrics body, by prometheus_client's strict parser (raises if bad)."""
    families: list[Metric] = list(
        openmetrics_parser.text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
    )
    return families


def promtool_check(promtool: str, body: bytes) -> tuple[int, list[str]]:
    """``promtool check metrics`` on ``body``: its exit code and the lines it printed."""
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    output = (result.stdout + result.stderr).decode()
    return result.returncode, [line for line in output.splitlines() if line.strip()]


def text_format_view(openmetrics: str) -> set[str]:
    """What promtool reports on a valid OpenMetrics body: only its own format limitation.

    promtool has no OpenMetrics parser and reads the 0.0.4 text format only: a counter family
    ``x`` is exposed in OpenMetrics as ``# TYPE x counter`` with samples ``x_total`` (and
    ``x_created``), which that parser reads as other, undocumented metrics.
    """
    expected: set[str] = set()
    for family in openmetrics_families(openmetrics):
        parts = {f"{family.name}_created"}
        if family.type == "counter":
            parts.add(f"{family.name}_total")
        expected |= {f"{s.name} no help text" for s in family.samples if s.name in parts}
    return expected


async def traffic(base: str) -> None:
    """HTTP requests to every route, a Redis-tier miss then hit, Socket.IO events both ways."""
    received = asyncio.Event()
    client = socketio.AsyncClient(reconnection=False)
    unbatch(client)

    async def on_chat(message: Any) -> None:
        received.set()

    client.on("chat", on_chat)
    await client.connect(base, transports=["websocket"], wait_timeout=10)
    try:
        assert await client.call("join", timeout=10) == {"room": "live"}
        await client.emit("chat", "hello")
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for product in [*range(1, 80), 1, 2, 3]:  # 64 fit: capacity evictions, then hits
                assert (await http.get(f"/products/{product}")).status_code == 200
            assert (await http.get("/categories/books")).status_code == 200
            assert (await http.get("/search", params={"q": "blue"})).status_code == 200
            assert (await http.get("/reports/sales")).status_code == 200
            order = await http.post("/orders", json={"product_id": 1, "qty": 2})
            assert order.status_code == 201
            # uvicorn closes the connection after an unhandled exception: ask for that up front.
            failed = await http.get("/error", headers={"connection": "close"})
            assert failed.status_code == 500
            assert (await http.get("/no/such/page")).status_code == 404
            for _ in range(2):  # local miss, Redis miss, load; then a local hit
                assert (await http.get("/tiered/k")).json() == {"value": "K"}
        await asyncio.wait_for(received.wait(), timeout=30)
    finally:
        await client.disconnect()


async def scrape_when_complete(base: str) -> tuple[httpx.Response, httpx.Response]:
    """Both formats, once every component has a sample (the monitor samples every second)."""
    client = socketio.AsyncClient(reconnection=False)  # keeps socketio_connections non-empty
    await client.connect(base, transports=["websocket"], wait_timeout=10)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            missing: list[str] = list(NEEDLES)
            for _ in range(300):
                text = await http.get("/metrics")
                missing = [needle for needle in NEEDLES if needle not in text.text]
                if not missing:
                    om = await http.get("/metrics", headers={"accept": OPENMETRICS})
                    return text, om
                await asyncio.sleep(0.1)
            raise AssertionError(f"never scraped: {missing}")
    finally:
        await client.disconnect()


@pytest.fixture(scope="module")
def scrapes() -> Iterator[tuple[httpx.Response, httpx.Response]]:
    """A text-format and an OpenMetrics scrape of the full app after real traffic."""
    if not port_open("127.0.0.1", 6379):
        need_service("Redis", "nothing listens on 127.0.0.1:6379")
    env = {
        "ASGI_PERF_REDIS": os.environ.get("ASGI_PERF_REDIS", "redis://127.0.0.1:6379/0"),
        "ASGI_PERF_TIER_NAMESPACE": f"promtool-all-{uuid.uuid4().hex}",
    }

    async def run(base: str) -> tuple[httpx.Response, httpx.Response]:
        await traffic(base)
        return await scrape_when_complete(base)

    with serve_app() as start:
        yield asyncio.run(run(start("tests.apps.full_app:app", env=env, ready_path="/metrics")))


def test_text_format_passes_promtool_cleanly(
    scrapes: tuple[httpx.Response, httpx.Response], promtool: str
) -> None:
    """The text format (0.0.4) of every instrument together passes promtool with no warning."""
    text, _ = scrapes
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    code, lines = promtool_check(promtool, text.content)
    assert (code, lines) == (0, [])
    families = {f.name for f in text_string_to_metric_families(text.text)}
    catalogued = {  # a batch job pushes its push metrics: an app never serves them
        spec.name.removesuffix("_total")
        for spec in CATALOGUE.values()
        # ... and the high-resolution histogram exists only with a compat setting asking for it
        if spec.component != "push" and spec.name != HIGHR_METRIC
    }
    assert catalogued - families <= FAULT_ONLY


def test_openmetrics_passes_promtool_but_for_its_format_limit(
    scrapes: tuple[httpx.Response, httpx.Response], promtool: str
) -> None:
    """The OpenMetrics scrape parses strictly, ends in # EOF, and promtool finds nothing in it
    but the counter parts its text-format parser cannot attribute to their family."""
    text, om = scrapes
    assert om.headers["content-type"].startswith(OPENMETRICS)
    assert om.text.endswith("# EOF\n")
    families = {f.name: f.type for f in openmetrics_families(om.text)}  # raises if invalid
    plain = {f.name: f.type for f in text_string_to_metric_families(text.text)}
    # The text format carries a counter's creation time as a separate ``<name>_created`` gauge.
    created = {f"{name}_created" for name, kind in plain.items() if kind == "counter"}
    assert {n: t for n, t in plain.items() if n not in created} == families
    code, lines = promtool_check(promtool, om.content)
    expected = text_format_view(om.text)
    assert expected  # the limitation is real: counters are there
    assert set(lines) == expected
    assert code == 3  # lint findings only, never "error while linting" (a parse failure)


def test_catalogue_names_follow_the_prometheus_conventions() -> None:
    """Counters end in _total; no other metric ends in a suffix Prometheus reserves for a type's
    parts (_total, _count, _sum, _bucket, _created, _info), so promtool has nothing to flag.
    (A counter may count things created: ``db_connections_created_total`` is unambiguous.)"""
    reserved = ("_total", "_count", "_sum", "_bucket", "_created", "_info")
    for spec in CATALOGUE.values():
        if spec.kind == "counter":
            assert spec.name.endswith("_total"), spec.name
            assert not spec.name.removesuffix("_total").endswith(reserved[:4]), spec.name
        else:
            assert not spec.name.endswith(reserved), spec.name

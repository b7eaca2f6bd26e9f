"""Multi-worker mode: the merged view a worker serves carries that worker's exemplars."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer
from prometheus_client.openmetrics import exposition
from sqlalchemy import create_engine, text

from asgi_perf import OVERFLOW, PerfMiddleware, PerfRegistry
from asgi_perf._types import Receive, Scope, Send
from asgi_perf.export import _multiprocess as mp
from asgi_perf.export._render import FastRenderer
from asgi_perf.http._stats import HTTP_STATS, SharedHttpStats
from asgi_perf.socketio._stats import socketio_stats
from asgi_perf.sqlalchemy import instrument_engine

pytestmark = pytest.mark.anyio

om_latest: Callable[..., bytes] = exposition.generate_latest


@pytest.fixture
def tracer() -> Tracer:
    return TracerProvider().get_tracer("tests")


@pytest.fixture
def merged(tmp_path: Path) -> Iterator[mp.Multiprocess]:
    """This process as one worker of a multi-worker app (closed after the test)."""
    # No process collectors: their CPU times move between the two renders compared below.
    m = mp.enable_multiprocess(PerfRegistry(process_metrics=False), tmp_path, interval=60)
    yield m
    m.close()


def exemplar_lines(body: bytes) -> dict[str, str]:
    """sample name and labels -> exemplar trace id, for every line with an exemplar."""
    found = {}
    for line in body.decode().splitlines():
        head, sep, tail = line.partition(" # ")
        if sep:
            trace = re.search(r'trace_id="(\w+)"', tail)
            assert trace is not None
            found[head.rsplit(" ", 1)[0]] = trace.group(1)
    return found


async def status_app(scope: Scope, receive: Receive, send: Send) -> None:
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def test_merged_view_carries_this_workers_exemplars(
    merged: mp.Multiprocess, tracer: Tracer
) -> None:
    """Request, query, Socket.IO handler and timer durations recorded in shared memory inside a
    span: the merged view this worker serves has the span's trace id on each bucket, rendered
    alike by the fast renderer and prometheus_client."""
    registry = merged.registry
    app = PerfMiddleware(status_app, registry=registry, route_getter=lambda scope: "/r")
    stats = registry.find_component(HTTP_STATS)
    assert isinstance(stats, SharedHttpStats)
    assert "record" in vars(stats)
    engine = create_engine("sqlite://")
    instrument_engine(engine, registry=registry, name="main")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/")
        with tracer.start_as_current_span("request") as span:
            await client.get("/")
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            with registry.timer("job"):
                pass
            socketio_stats(registry).observe_handler(("/", "chat"), 0.01)
    engine.dispose()
    trace_id = f"{span.get_span_context().trace_id:032x}"
    body = om_latest(merged.view)
    assert FastRenderer(openmetrics=True).render(merged.view) == body
    found = exemplar_lines(body)
    assert set(found.values()) == {trace_id}
    families = {key.split("{")[0] for key in found}
    assert families == {
        "http_request_duration_seconds_bucket",
        "db_query_duration_seconds_bucket",
        "app_timer_duration_seconds_bucket",
        "socketio_handler_duration_seconds_bucket",
    }
    assert 'http_requests_total{method="GET",route="/r",status="200"} 2.0' in body.decode()


async def test_folded_series_keep_their_exemplars(tmp_path: Path, tracer: Tracer) -> None:
    """Past the series cap a new route and a new status are folded into the overflow values; the
    exemplar is found on the series the request was counted in."""
    m = mp.enable_multiprocess(PerfRegistry(max_series_per_metric=1), tmp_path, interval=60)
    try:
        routes = iter(["/a", "/b", "/a"])
        app = PerfMiddleware(status_app, registry=m.registry, route_getter=lambda s: next(routes))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for path in ("/", "/", "/missing"):
                with tracer.start_as_current_span("request"):
                    await client.get(path)
        series = {key.split("{", 1)[1] for key in exemplar_lines(om_latest(m.view))}
        labels = {re.sub(r'le="[^"]*",', "", s) for s in series}
        assert labels == {
            'method="GET",route="/a",status="200"}',
            f'method="GET",route="{OVERFLOW}",status="200"}}',
            f'method="GET",route="/a",status="{OVERFLOW}"}}',
        }
    finally:
        m.close()


async def test_without_a_source_the_shared_recorders_are_plain(tmp_path: Path) -> None:
    """exemplars=False in multi-worker mode: the plain shared recorders, no exemplars."""
    m = mp.enable_multiprocess(PerfRegistry(exemplars=False), tmp_path, interval=60)
    try:
        PerfMiddleware(status_app, registry=m.registry)
        stats: Any = m.registry.find_component(HTTP_STATS)
        assert type(stats) is SharedHttpStats
        assert "record" not in vars(stats)
        assert b"# {" not in om_latest(m.view)
    finally:
        m.close()


async def test_extra_labels_keep_their_exemplars(tmp_path: Path, tracer: Tracer) -> None:
    """Constant and per-request labels are part of a shared series' labels: the exemplar is found
    on the series the request was counted in, extra labels and all."""
    m = mp.enable_multiprocess(PerfRegistry(process_metrics=False), tmp_path, interval=60)
    try:
        app = PerfMiddleware(
            status_app,
            registry=m.registry,
            route_getter=lambda scope: "/r",
            labels={"app_name": "shop"},
            label_from={"tenant": lambda scope: "acme"},
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            with tracer.start_as_current_span("request") as span:
                await client.get("/")
        trace_id = f"{span.get_span_context().trace_id:032x}"
        found = exemplar_lines(om_latest(m.view))
        [key] = [k for k in found if k.startswith("http_request_duration_seconds_bucket")]
        assert found[key] == trace_id
        for label in ('app_name="shop"', 'tenant="acme"', 'route="/r"', 'status="200"'):
            assert label in key
    finally:
        m.close()

"""The summary read from rows equals the summary read from ``collect()``, field for field."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import Counter, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_perf import PerfMiddleware, PerfRegistry, instrument
from asgi_perf.cache import LRUCache
from asgi_perf.export._render import FastRenderer
from asgi_perf.http._stats import HTTP_STATS, HttpStats, SharedHttpStats
from asgi_perf.operations import Summary, SystemFigures
from asgi_perf.operations._samples import Reading, Samples, Window
from asgi_perf.operations._summary import _build
from asgi_perf.registry import COLLECT_COMPONENT

SYSTEM: SystemFigures = {
    "source": "fixed",
    "cpu_percent": None,
    "memory_percent": None,
    "disk_percent": None,
    "disk_path": "/",
    "process_cpu_percent": None,
    "rss_bytes": None,
    "open_fds": None,
    "cpu_count": None,
}


def _summary(registry: PerfRegistry, *, rows: bool, base: Window | None = None) -> Summary:
    now = registry.started_at + 10.0
    window = base if base is not None else Window(registry.started_at)
    reading = Reading(registry, Samples(registry, rows=rows), window, Window(now), now)
    return _build(reading, lambda: SYSTEM)


def _both(registry: PerfRegistry, base: Window | None = None) -> tuple[Summary, Summary]:
    return _summary(registry, rows=False, base=base), _summary(registry, rows=True, base=base)


def _stats(registry: PerfRegistry) -> HttpStats:
    PerfMiddleware(_noop, registry=registry)
    stats = registry.find_component(HTTP_STATS)
    assert stats is not None
    return stats


async def _noop(scope: Any, receive: Any, send: Any) -> None:
    return None


def _traffic(stats: HttpStats, routes: int) -> None:
    for i in range(routes):
        for j, status in enumerate(("200", "404", "500", "503")):
            for k in range(i % 3 + j + 1):
                duration = 0.0007 * (k + 1) * (i + 1) ** 1.5
                stats.record("GET", f"/r{i}/{{id}}", status, duration, duration / 2, k, 100 * k)
        stats.record("POST", f"/r{i}/{{id}}", "201", 0.02, None, 10, 0)
    stats.record_exception("GET", "/r0/{id}", "ValueError")
    stats.flights["GET"].count += 2


def test_no_traffic_is_the_same_summary(registry: PerfRegistry) -> None:
    """A registry with the HTTP series store but no request summarizes alike both ways."""
    _stats(registry)
    old, new = _both(registry)
    assert new == old
    assert new["http"]["routes"] == []


def test_many_routes_statuses_and_every_section_are_the_same(registry: PerfRegistry) -> None:
    """Routes x statuses, exceptions, in-progress requests and the non-HTTP sections (read
    through collect() either way) give equal summaries."""
    _traffic(_stats(registry), 40)
    registry.histogram("db_query_duration_seconds").labels("main", "SELECT", "ok").observe(0.01)
    registry.counter("db_slow_queries_total").labels("main", "SELECT").inc()
    cache: LRUCache[str, int] = LRUCache(8, name="users", registry=registry)
    cache["a"] = 1
    _ = cache.get("a"), cache.get("b")
    registry.timer("job").__enter__().__exit__(None, None, None)
    old, new = _both(registry)
    assert new == old
    assert len(new["http"]["routes"]) == 80
    assert new["http"]["in_progress"] == 2
    assert new["http"]["exceptions"] == {"ValueError": 1}
    assert new["cache"]["caches"][0]["hits"] == 1


def test_window_deltas_are_the_same(registry: PerfRegistry) -> None:
    """Over a window that started after some traffic, rates and percentiles agree."""
    stats = _stats(registry)
    _traffic(stats, 5)
    base = Window(registry.started_at + 5.0)
    reading = Reading(registry, Samples(registry), Window(registry.started_at), base, base.at)
    _build(reading, lambda: SYSTEM)  # fills ``base`` with the figures to subtract
    _traffic(stats, 7)
    old, new = _both(registry, base)
    assert new == old
    assert new["http"]["window_requests"] > 0


@pytest.mark.anyio
async def test_excluded_routes_and_real_requests_are_the_same(registry: PerfRegistry) -> None:
    """Requests through a real app, some on an excluded path: equal summaries, and the excluded
    path is in neither."""

    async def ok(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/ok/{n}", ok), Route("/health", ok)])
    instrument(app, registry=registry, exclude_paths=["/health"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for i in range(5):
            await client.get(f"/ok/{i}")
            await client.get("/health")
            await client.get("/missing")
    old, new = _both(registry)
    assert new == old
    assert {r["route"] for r in new["http"]["routes"]} == {"/ok/{n}", "__unmatched__"}


def test_series_cap_reached_is_the_same() -> None:
    """Past the series cap the overflow series and the overflow count agree."""
    registry = PerfRegistry(max_series_per_metric=5)
    stats = _stats(registry)
    _traffic(stats, 4)
    for i in range(4):
        stats.record_exception("GET", f"/r{i}/{{id}}", "KeyError")
    old, new = _both(registry)
    assert new == old
    assert "__overflow__" in {r["route"] for r in new["http"]["routes"]}
    assert new["instrumentation"]["series_overflow"]["http_request_duration_seconds"] > 0


def test_a_failing_collector_is_left_out_alike(
    registry: PerfRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the HTTP store raises at read time, both summaries leave HTTP out and count it."""
    _traffic(_stats(registry), 3)

    def broken(self: HttpStats, skip: Any = ()) -> Any:
        raise RuntimeError("corrupt store")

    monkeypatch.setattr(HttpStats, "rows", broken)
    old = _summary(registry, rows=False)
    new = _summary(registry, rows=True)
    # The error counter is read before the HTTP store: each summary shows the ones before it.
    assert old["instrumentation"]["errors"] == {}
    assert new["instrumentation"]["errors"] == {COLLECT_COMPONENT: 1.0}
    assert _summary(registry, rows=True)["instrumentation"]["errors"] == {COLLECT_COMPONENT: 2.0}
    new["instrumentation"]["errors"] = old["instrumentation"]["errors"]
    assert new == old
    assert new["http"]["routes"] == []


def test_namespace_is_the_same() -> None:
    """With a namespace the rows path still finds every figure."""
    registry = PerfRegistry(namespace="shop")
    _traffic(_stats(registry), 3)
    # Another library's metric in the same registry, outside the namespace: not the summary's.
    Counter("jobs", "Jobs.", registry=registry.prometheus).inc()
    old, new = _both(registry)
    assert new == old
    assert new["http"]["requests"] > 0


def test_multi_worker_store_is_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's summary in multi-worker mode (series in shared memory) agrees both ways."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = PerfRegistry(max_series_per_metric=40)
    stats = _stats(registry)
    assert isinstance(stats, SharedHttpStats)
    _traffic(stats, 12)
    old, new = _both(registry)
    assert new == old
    assert new["http"]["requests"] > 0
    assert new["http"]["exceptions"] == {"ValueError": 1}


_durations = st.one_of(
    st.floats(min_value=0.0, max_value=120.0, allow_nan=False),
    st.sampled_from([0.0, 0.005, 0.01, 2.5, 10.0, math.inf]),
)
_requests = st.lists(
    st.tuples(
        st.sampled_from(["GET", "POST", "OTHER"]),
        st.sampled_from(["/", "/a", "/b/{id}", '/c\\"\n']),
        st.sampled_from(["200", "204", "404", "500", "502"]),
        _durations,
        st.one_of(st.none(), _durations),
        st.integers(min_value=0, max_value=10**9),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=_requests, second=_requests, cap=st.integers(min_value=1, max_value=30))
def test_random_traffic_gives_the_same_summary(
    first: list[tuple[str, str, str, float, float | None, int]],
    second: list[tuple[str, str, str, float, float | None, int]],
    cap: int,
) -> None:
    """Any traffic, over the lifetime and over a later window, and any series cap: the rows
    summary equals the collect() summary."""
    registry = PerfRegistry(max_series_per_metric=cap)
    stats = _stats(registry)
    for method, route, status, duration, ttfb, size in first:
        stats.record(method, route, status, duration, ttfb, size, size // 2)
    base = Window(registry.started_at + 1.0)
    reading = Reading(registry, Samples(registry), Window(registry.started_at), base, base.at)
    _build(reading, lambda: SYSTEM)
    for method, route, status, duration, ttfb, size in second:
        stats.record(method, route, status, duration, ttfb, size, size // 2)
    for window in (None, base):
        old, new = _both(registry, window)
        assert new == old


@pytest.mark.anyio
@pytest.mark.parametrize("shared", [False, True])
async def test_extra_labels_are_the_same_and_render_as_the_library(
    shared: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With constant and per-request labels (single and multi-worker), the rows summary equals
    the collect() one, and the fast renderer writes what generate_latest writes."""
    if shared:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    # Without the process and GC collectors, whose figures move between two renders.
    registry = PerfRegistry(process_metrics=False)

    async def ok(request: Request) -> Response:
        if request.url.path.endswith("/3"):
            raise RuntimeError("boom")
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/ok/{n}", ok)])
    app.add_middleware(
        PerfMiddleware,
        registry=registry,
        labels={"app_name": "shop"},
        label_from={"tenant": lambda scope: "t" + scope["path"][-1]},
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for i in range(4):
            await client.get(f"/ok/{i}")
    old, new = _both(registry)
    assert new == old
    assert new["http"]["requests"] == 4
    for openmetrics, library in ((False, generate_latest), (True, om_generate_latest)):
        body = FastRenderer(openmetrics=openmetrics).render(registry.prometheus)
        assert body == library(registry.prometheus)
        assert b'tenant="t1"' in body
        assert b'app_name="shop"' in body

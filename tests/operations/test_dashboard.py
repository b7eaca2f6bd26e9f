"""The operations endpoints (summary, history, alerts, dashboard) served next to /metrics."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from asgi_perf import PerfRegistry, instrument, metrics_app
from asgi_perf._types import Message
from asgi_perf.operations import Monitor, _endpoints
from asgi_perf.operations._endpoints import (
    DASHBOARD_CSP,
    DEFAULT_DASHBOARD_WINDOW,
    ERR_QUERY,
    ERR_WINDOW_QUERY,
    VENDORED,
    dashboard_file,
    dashboard_html,
    dumps,
    refresh_seconds,
    window_seconds,
)
from asgi_perf.operations._summary import MAX_WINDOW
from asgi_perf.testing import scrape

from .._server import ROOT


@pytest.mark.anyio
async def test_endpoints_without_monitor_or_alerts(registry: PerfRegistry) -> None:
    """Summary works on its own; history and alerts say they are not enabled."""
    app = metrics_app(registry, operations=True)
    summary = json.loads((await scrape(app, "/metrics/summary")).body)
    assert summary["http"]["routes"] == []
    history = json.loads((await scrape(app, "/metrics/history")).body)
    assert history == {"enabled": False, "interval": None, "size": 0, "snapshots": []}
    alerts = json.loads((await scrape(app, "/metrics/alerts")).body)
    assert alerts == {"enabled": False, "alerts": [], "silences": {}}
    metrics = await scrape(app, "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")


@pytest.mark.anyio
async def test_history_query_and_errors(registry: PerfRegistry) -> None:
    """history takes since= and limit=; malformed values get a 400, not a crash."""
    ticks = iter(range(1000, 2000, 5))
    monitor = Monitor(registry, clock=lambda: float(next(ticks)))
    for _ in range(3):
        monitor.sample()
    app = metrics_app(registry, render_in_thread=False, operations=True)
    body = json.loads((await scrape(app, "/metrics/history")).body)
    assert len(body["snapshots"]) == 3

    async def get(query: str) -> Any:
        scope_app = app
        sent: list[Message] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: Message) -> None:
            sent.append(message)

        await scope_app(
            {
                "type": "http",
                "method": "GET",
                "path": "/metrics/history",
                "query_string": query.encode(),
                "headers": [],
            },
            receive,
            send,
        )
        return sent[0]["status"], json.loads(sent[1]["body"])

    status, limited = await get("limit=1")
    assert status == 200
    assert len(limited["snapshots"]) == 1
    first = body["snapshots"][0]["time"]
    status, since = await get(f"since={first}")
    assert len(since["snapshots"]) == 2
    for bad in ("limit=x", "since=abc", "limit=-1", "since=inf"):
        status, error = await get(bad)
        assert status == 400
        assert error == {"error": ERR_QUERY}


@pytest.mark.anyio
async def test_operations_endpoints_share_the_metrics_auth(registry: PerfRegistry) -> None:
    """Every operations endpoint needs the same token as /metrics."""
    app = metrics_app(registry, token="s3cret", operations=True)
    for path in ("/metrics/summary", "/metrics/history", "/metrics/alerts", "/metrics/dashboard"):
        assert (await scrape(app, path)).status == 401
        ok = await scrape(app, path, headers=[("Authorization", "Bearer s3cret")])
        assert ok.status == 200
    head = await scrape(
        app, "/metrics/summary", method="HEAD", headers=[("Authorization", "Bearer s3cret")]
    )
    assert head.body == b""


@pytest.mark.anyio
async def test_plain_collector_registry_has_no_operations() -> None:
    """A metrics app over a bare CollectorRegistry answers 404 on the operations paths."""
    app = metrics_app(CollectorRegistry(), operations=True)
    assert (await scrape(app, "/metrics/summary")).status == 404


@pytest.mark.anyio
async def test_instrument_adds_the_operations_routes(registry: PerfRegistry) -> None:
    """instrument(operations=True) routes <metrics_path>/summary etc.; the default leaves them out."""
    app = Starlette()
    instrument(app, registry=registry, metrics_path="/internal/metrics/", operations=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/internal/metrics/summary")
        assert response.status_code == 200
        assert "http" in response.json()
        page = await c.get("/internal/metrics/dashboard")
        assert page.headers["content-type"] == "text/html; charset=utf-8"
    bare = Starlette()
    instrument(bare, registry=PerfRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://t") as c:
        assert (await c.get("/metrics/summary")).status_code == 404


def test_page_loads_only_its_own_files() -> None:
    """The page, its script and stylesheet load nothing from another origin, hold no inline
    script or style (the CSP allows neither) and never write markup from data."""
    html = dashboard_html().decode()
    js = dashboard_file("dashboard.js")
    css = dashboard_file("dashboard.css")
    for text in (html, js, css):
        assert "http://" not in text.replace('"http://www.w3.org/2000/svg"', "")
        assert "https://" not in text
    assert "<style" not in html
    assert "style=" not in html
    assert '<script src="uplot.js"></script>\n<script src="dashboard.js"></script>' in html
    assert html.count("<script") == 2
    assert '<link rel="stylesheet" href="uplot.css">' in html
    assert '<link rel="stylesheet" href="dashboard.css">' in html
    # The vendored chart library: unmodified, from the same origin, with its licence and version.
    readme = dashboard_file("vendor/README")
    assert "uPlot 1.6.32 (MIT licence" in readme
    assert "The MIT License" in dashboard_file("vendor/uPlot.LICENSE")
    assert dashboard_file(VENDORED["uplot.js"]).startswith(
        "/*! https://github.com/leeoniya/uPlot (v1.6.32) */"
    )
    assert "innerHTML" not in js
    assert 'setAttribute("style' not in js
    assert "eval(" not in js


@pytest.mark.parametrize(
    ("query", "seconds"),
    [
        (b"", 5.0),
        (b"refresh=10", 10.0),
        (b"refresh=2.5", 2.5),
        (b"refresh=3000000", 3600.0),
        (b"refresh=1e308", 3600.0),
        (b"refresh=0", 1.0),
        (b"refresh=-5", 1.0),
        (b"refresh=nan", 5.0),
        (b"refresh=inf", 5.0),
        (b"refresh=soon", 5.0),
    ],
)
def test_refresh_is_clamped_on_the_server(query: bytes, seconds: float) -> None:
    """?refresh= is clamped to 1-3600 s (unreadable: 5 s) and written into the page, so no value
    can overflow the page's timer into a tight polling loop."""
    assert refresh_seconds(query) == seconds
    assert f'data-refresh="{seconds:g}"' in dashboard_html(query).decode()


def test_script_clamps_the_period_too() -> None:
    """The script bounds the period it reads as well (defence in depth)."""
    assert "Math.min(3600, Math.max(1, Number(document.body.dataset.refresh) || 5))" in (
        dashboard_file("dashboard.js")
    )


@pytest.mark.anyio
async def test_dashboard_response_headers(registry: PerfRegistry) -> None:
    """The page is sent with its CSP (no framing), nosniff and DENY framing; its files with
    their types."""
    app = metrics_app(registry, operations=True, allow=["127.0.0.1"])
    page = await scrape(app, "/metrics/dashboard?refresh=3000000")
    assert page.headers["content-security-policy"] == DASHBOARD_CSP
    assert "frame-ancestors 'none'" in DASHBOARD_CSP
    assert DASHBOARD_CSP.startswith("default-src 'self';")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    script = await scrape(app, "/metrics/dashboard.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.body.decode() == dashboard_file("dashboard.js")
    style = await scrape(app, "/metrics/dashboard.css")
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    chart = await scrape(app, "/metrics/uplot.js")
    assert chart.headers["content-type"] == "text/javascript; charset=utf-8"
    assert chart.body.decode() == dashboard_file(VENDORED["uplot.js"])
    chart_style = await scrape(app, "/metrics/uplot.css")
    assert chart_style.headers["content-type"] == "text/css; charset=utf-8"


@pytest.mark.anyio
async def test_history_limit_is_bounded(
    registry: PerfRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/history returns at most MAX_HISTORY_LIMIT snapshots whatever limit= (or none) asks."""
    monkeypatch.setattr(_endpoints, "MAX_HISTORY_LIMIT", 3)
    ticks = iter(range(1000, 2000, 5))
    monitor = Monitor(registry, clock=lambda: float(next(ticks)))
    for _ in range(5):
        monitor.sample()
    app = metrics_app(registry, render_in_thread=False, operations=True, allow=["127.0.0.1"])
    for path in ("/metrics/history", "/metrics/history?limit=1000000000"):
        body = json.loads((await scrape(app, path)).body)
        assert len(body["snapshots"]) == 3
    huge = await scrape(app, "/metrics/history?limit=" + "9" * 5000)
    assert huge.status == 400


def test_json_never_holds_nan() -> None:
    """NaN and infinities become null: browsers' JSON.parse rejects them."""
    assert json.loads(dumps({"a": float("nan"), "b": [float("inf")], "c": (1.5,)})) == {
        "a": None,
        "b": [None],
        "c": [1.5],
    }


def test_wheel_ships_the_dashboard(tmp_path: Path) -> None:
    """The built wheel contains the dashboard's HTML, CSS and JS, and the vendored chart library
    with its licence."""
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in (
        "index.html",
        "dashboard.css",
        "dashboard.js",
        "vendor/uPlot.iife.min.js",
        "vendor/uPlot.min.css",
        "vendor/uPlot.LICENSE",
        "vendor/README",
    ):
        assert f"asgi_perf/operations/dashboard/{name}" in names


@pytest.mark.anyio
async def test_summary_takes_a_window(registry: PerfRegistry) -> None:
    """summary?window=N reads over the last N seconds (here: since the registry started, all it
    has); a window that is not a positive number is a 400."""
    app = metrics_app(registry, render_in_thread=False, operations=True)
    body = json.loads((await scrape(app, "/metrics/summary?window=30")).body)
    assert body["window"]["start"] == round(registry.started_at, 3)
    for bad in ("0", "-3", "nan", "soon"):
        response = await scrape(app, f"/metrics/summary?window={bad}")
        assert response.status == 400
        assert json.loads(response.body) == {"error": ERR_WINDOW_QUERY}


@pytest.mark.parametrize(
    ("query", "seconds"),
    [
        (b"", DEFAULT_DASHBOARD_WINDOW),
        (b"window=60", 60.0),
        (b"window=2&refresh=10", 10.0),  # never shorter than the refresh
        (b"window=1e9", MAX_WINDOW),
        (b"window=nan", DEFAULT_DASHBOARD_WINDOW),
    ],
)
def test_page_window_is_clamped_and_written(query: bytes, seconds: float) -> None:
    """The page's window (?window=) is at least its refresh and at most MAX_WINDOW; it is written
    into the page, whose script asks the summary for it and shows it."""
    assert window_seconds(query, refresh_seconds(query)) == seconds
    assert f'data-window="{seconds:g}"' in dashboard_html(query).decode()
    assert "summary?window=" in dashboard_file("dashboard.js")


@pytest.mark.anyio
async def test_own_polling_is_not_in_the_figures(registry: PerfRegistry) -> None:
    """The dashboard's own requests (page, assets, summary) are neither counted nor "in progress"
    while the summary is built; the app's requests are."""
    app = Starlette()

    async def hello(request: Any) -> Any:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("hi")

    app.add_route("/hello", hello)
    instrument(app, registry=registry, operations=True, exclude_paths="/healthz")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        await c.get("/hello")
        for path in ("/metrics/dashboard", "/metrics/dashboard.js", "/metrics/uplot.js"):
            assert (await c.get(path)).status_code == 200
        summary = (await c.get("/metrics/summary?window=30")).json()
    assert [r["route"] for r in summary["http"]["routes"]] == ["/hello"]
    assert summary["http"]["in_progress"] == 0
    assert summary["http"]["requests"] == 1


@pytest.mark.anyio
async def test_record_own_endpoints_still_records_them(registry: PerfRegistry) -> None:
    """record_own_endpoints=True keeps the metrics routes in the figures, as documented."""
    app = Starlette()
    instrument(app, registry=registry, operations=True, record_own_endpoints=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        await c.get("/metrics/summary")
        summary = (await c.get("/metrics/summary")).json()
    assert summary["http"]["in_progress"] == 1  # this very request
    assert [r["route"] for r in summary["http"]["routes"]] == ["/metrics/summary"]

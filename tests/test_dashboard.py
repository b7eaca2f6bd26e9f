"""The operations endpoints and the live dashboard page, in a real headless Chromium."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from asgi_perf import PerfRegistry, instrument, metrics_app
from asgi_perf._types import Message
from asgi_perf.operations import Monitor
from asgi_perf.operations._endpoints import ERR_QUERY, dashboard_html, dumps
from asgi_perf.testing import scrape

from ._server import ROOT, ServerFactory
from .conftest import need_service

ARTIFACTS = ROOT / "test-artifacts"


@pytest.mark.anyio
async def test_endpoints_without_monitor_or_alerts(registry: PerfRegistry) -> None:
    """Summary works on its own; history and alerts say they are not enabled."""
    app = metrics_app(registry)
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
    app = metrics_app(registry, render_in_thread=False)
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
    app = metrics_app(registry, token="s3cret")
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
    app = metrics_app(CollectorRegistry())
    assert (await scrape(app, "/metrics/summary")).status == 404


@pytest.mark.anyio
async def test_instrument_adds_the_operations_routes(registry: PerfRegistry) -> None:
    """instrument() routes <metrics_path>/summary etc.; operations_routes=False leaves them out."""
    app = Starlette()
    instrument(app, registry=registry, metrics_path="/internal/metrics/")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/internal/metrics/summary")
        assert response.status_code == 200
        assert "http" in response.json()
        page = await c.get("/internal/metrics/dashboard")
        assert page.headers["content-type"] == "text/html; charset=utf-8"
    bare = Starlette()
    instrument(bare, registry=PerfRegistry(), operations_routes=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://t") as c:
        assert (await c.get("/metrics/summary")).status_code == 404


def test_page_is_self_contained() -> None:
    """The page inlines its CSS and JS and loads nothing from another origin."""
    html = dashboard_html().decode()
    assert "/*__CSS__*/" not in html
    assert "/*__JS__*/" not in html
    assert "http://" not in html.replace('"http://www.w3.org/2000/svg"', "")
    assert "https://" not in html
    assert "innerHTML" not in html


def test_json_never_holds_nan() -> None:
    """NaN and infinities become null: browsers' JSON.parse rejects them."""
    assert json.loads(dumps({"a": float("nan"), "b": [float("inf")], "c": (1.5,)})) == {
        "a": None,
        "b": [None],
        "c": [1.5],
    }


def test_wheel_ships_the_dashboard(tmp_path: Path) -> None:
    """The built wheel contains the dashboard's HTML, CSS and JS."""
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("index.html", "dashboard.css", "dashboard.js"):
        assert f"asgi_perf/operations/dashboard/{name}" in names


# -- the page in a real headless Chromium ---
class Dom(HTMLParser):
    """Collects text by id, by (table row key, field) and the alert list items."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.cells: dict[tuple[str, str], str] = {}
        self.kv: dict[str, str] = {}
        self.alerts: list[dict[str, str]] = {}  # type: ignore[assignment]
        self.alerts = []
        self.attrs_by_id: dict[str, dict[str, str]] = {}
        self.body: dict[str, str] = {}
        self._stack: list[tuple[str, dict[str, str]]] = []
        self._row: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = a
        if tag == "tr":
            self._row = a.get("data-key")
        if "id" in a:
            self.attrs_by_id[a["id"]] = a
        self._stack.append((tag, a))
        self._text = []

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if not self._stack:
            return
        _, a = self._stack.pop()
        text = "".join(self._text).strip()
        if "id" in a:
            self.by_id[a["id"]] = text
        if tag == "td" and self._row is not None and "data-field" in a:
            self.cells[(self._row, a["data-field"])] = text
        if tag == "dd" and "data-field" in a:
            self.kv[a["data-field"]] = text
        if tag == "li" and "data-rule" in a:
            self.alerts.append({"rule": a["data-rule"], "state": a["data-state"], "text": text})
        if tag == "tr":
            self._row = None


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        need_service("chromium", "install the Debian package 'chromium'")
    assert path is not None
    return path


def _browser(binary: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=15000",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _shown_ms(text: str) -> float:
    assert text.endswith(" ms"), text
    return float(text.removesuffix(" ms"))


@pytest.mark.slow
def test_dashboard_in_chromium_shows_the_json(server: ServerFactory) -> None:
    """Loaded in headless Chromium, the page's tiles and tables show what the JSON holds."""
    binary = _chromium()
    base = server("tests.apps.ops_app:app", ready_path="/metrics")
    with httpx.Client(base_url=base) as client:
        # The monitor's first sample sets the window both reads below share: wait for it.
        for _ in range(600):
            if client.get("/metrics/history").json()["snapshots"]:
                break
            time.sleep(0.05)
        for i in range(6):
            client.get(f"/items/{i}")
        client.get("/fail")
        result = _browser(binary, f"{base}/metrics/dashboard", "--dump-dom")
        summary = client.get("/metrics/summary").json()
        alerts = client.get("/metrics/alerts").json()
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Dom()
    dom.feed(result.stdout)
    assert dom.body.get("data-state") == "ready", result.stdout[:2000]

    routes = {f"{r['method']} {r['route']}": r for r in summary["http"]["routes"]}
    items = routes["GET /items/{item_id}"]
    assert dom.cells[("GET /items/{item_id}", "requests")] == "6"
    assert dom.cells[("GET /items/{item_id}", "errors")] == "0"
    assert dom.cells[("GET /fail", "error_rate")] == "100.0%"
    # Latency figures of a route nobody calls any more do not move between the two reads. The
    # page rounds with JavaScript's toFixed, which breaks ties differently from Python's format:
    # compare the numbers to the displayed precision, not the strings.
    assert _shown_ms(dom.cells[("GET /items/{item_id}", "p95")]) == pytest.approx(
        items["p95"] * 1000, abs=0.051
    )
    assert _shown_ms(dom.cells[("GET /items/{item_id}", "avg")]) == pytest.approx(
        items["avg"] * 1000, abs=0.051
    )

    (engine,) = summary["db"]["engines"]
    assert dom.cells[("main", "queries")] == str(engine["queries"]) == "41"
    assert dom.cells[("main", "slow")] == "3"
    assert dom.cells[("main", "pool_size")] == "5"
    assert dom.cells[("main", "checked_out")] == "2"
    (cache,) = summary["cache"]["caches"]
    assert dom.cells[("users", "hit_ratio")] == f"{cache['hit_ratio'] * 100:.1f}%" == "90.0%"
    assert dom.cells[("users", "entries")] == "42"
    assert dom.cells[("users", "evictions")] == "7"
    assert cache["redis"]["hit_ratio"] == 0.75
    assert dom.cells[("users", "redis_hit_ratio")] == "75.0%"
    assert dom.cells[("users", "redis_errors")] == "2"
    slow = summary["db"]["slow_queries"][0]
    assert dom.cells[("abc123", "sql")] == slow["sql"]  # shown as text, not markup
    assert dom.cells[("abc123", "duration")] == "1250.0 ms"
    assert dom.kv["connections"] == "12"
    assert dom.kv["events_received"] == "300"
    assert dom.kv["events_emitted"] == "900"
    assert dom.kv["batch_pending"] == "4"
    assert dom.kv["memory_percent"].endswith("%")
    assert dom.by_id["alerts-firing"] == "1"
    assert [(a["rule"], a["state"]) for a in dom.alerts] == [("ManyConnections", "firing")]
    assert alerts["alerts"][0]["rule"] == "ManyConnections"
    assert int(dom.attrs_by_id["chart-rate"]["data-points"]) >= 1

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    taken = _browser(
        binary,
        f"{base}/metrics/dashboard",
        f"--screenshot={shot}",
        "--window-size=1400,1700",
        "--hide-scrollbars",
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == base64.b64decode("iVBORw0KGgo=")

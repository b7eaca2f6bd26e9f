"""Secure defaults through a real uvicorn: what instrument(app) exposes, the dashboard's headers,
the package's own traffic left out of the app's metrics, and a duplicate set-up."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from asgi_perf.operations._endpoints import DASHBOARD_CSP

from .._browser import Dom, browser, chromium
from .._server import ServerFactory

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OPS_PATHS = [
    "/metrics/summary",
    "/metrics/history",
    "/metrics/alerts",
    "/metrics/dashboard",
    "/metrics/dashboard.js",
    "/metrics/dashboard.css",
    "/metrics/uplot.js",
    "/metrics/uplot.css",
]


def requests_by_route(base: str) -> dict[str, float]:
    """``http_requests_total`` summed per route label, from a real scrape."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(base + "/metrics").text):
        for s in family.samples:
            if s.name == "http_requests_total":
                route = s.labels["route"]
                totals[route] = totals.get(route, 0.0) + s.value
    return totals


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> and <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in is not None and data.strip():
            self.inline.append(data)


def test_instrument_exposes_metrics_only_and_leaves_itself_out(server: ServerFactory) -> None:
    """instrument(app) with no options: the operations paths are 404 and scraping /metrics is
    not counted in the app's own HTTP metrics."""
    base = server("tests.apps.http_app:app", ready_path="/metrics")
    with httpx.Client(base_url=base) as client:
        for path in OPS_PATHS:
            response = client.get(path)
            assert response.status_code == 404, path
            assert "http" not in response.text
        for _ in range(3):
            assert client.get("/metrics").status_code == 200
        assert client.get("/api/v1/items/1").status_code == 200
    by_route = requests_by_route(base)
    assert "/metrics" not in by_route
    assert by_route["/api/v1/items/{item_id}"] == 1


def test_dashboard_headers_and_page(server: ServerFactory) -> None:
    """The dashboard sends a CSP allowing only same-origin files and no framing, nosniff, and
    its page holds no inline script or style; ?refresh= is clamped on the server; the page's
    own polling is not counted in the app's metrics."""
    base = server("tests.apps.ops_app:app", ready_path="/metrics")
    with httpx.Client(base_url=base) as client:
        page = client.get("/metrics/dashboard", params={"refresh": "3000000"})
        script = client.get("/metrics/dashboard.js")
        style = client.get("/metrics/dashboard.css")
        for path in OPS_PATHS:
            client.get(path)
        client.get("/items/1")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert csp == DASHBOARD_CSP
    directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ")}
    assert directives["default-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "script-src" not in directives  # default-src 'self': no inline script, no eval
    assert page.headers["x-content-type-options"] == "nosniff"
    tags = Tags()
    tags.feed(page.text)
    assert tags.inline == []
    assert not [t for t, a in tags.tags if t == "style" or "style" in a]
    assert not [a for _, a in tags.tags for k in a if k.startswith("on")]
    assert [a["src"] for t, a in tags.tags if t == "script"] == ["uplot.js", "dashboard.js"]
    # Images: this origin, or the data: URL of the page's empty icon; nothing else.
    assert directives["img-src"] == ["'self'", "data:"]
    assert [a["href"] for t, a in tags.tags if t == "link" and a.get("rel") == "icon"] == ["data:,"]
    (body,) = [a for t, a in tags.tags if t == "body"]
    assert body["data-refresh"] == "3600"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["x-content-type-options"] == "nosniff"
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    assert requests_by_route(base) == {"/items/{item_id}": 1}


def test_dashboard_runs_under_its_csp_in_chromium(server: ServerFactory) -> None:
    """Headless Chromium loads the dashboard with an absurd ?refresh=: the script runs (the page
    reaches its ready state), the browser reports no CSP violation, the period is clamped."""
    binary = chromium()
    base = server("tests.apps.ops_app:app", ready_path="/metrics")
    result = browser(
        binary,
        f"{base}/metrics/dashboard?refresh=3000000",
        "--dump-dom",
        "--enable-logging=stderr",
        "--v=0",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Dom()
    dom.feed(result.stdout)
    assert dom.body.get("data-state") == "ready", result.stdout[:2000]
    assert dom.body.get("data-refresh") == "3600"
    assert "Content Security Policy" not in result.stderr


def test_duplicate_with_other_buckets_under_uvicorn(server: ServerFactory) -> None:
    """instrument() plus add_middleware(PerfMiddleware, buckets=other) on one registry, served by
    uvicorn: every request succeeds and is counted once."""
    base = server("tests.apps.duplicate_app:app", ready_path="/metrics")
    with httpx.Client(base_url=base) as client:
        statuses = [client.get("/hello").status_code for _ in range(7)]
    assert statuses == [200] * 7
    assert requests_by_route(base) == {"/hello": 7}

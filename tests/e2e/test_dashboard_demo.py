"""The dashboard of the running demo in a real headless Chromium, driven over DevTools: at 1280 and
1920 px its figures match the JSON summary, nothing is clipped sideways, the charts have axes and
hover values, the console is clean and the CSP is never violated.

The page and the JSON are read over a 300 s window, asked for as soon as the app is up: the
summary then keeps its start as the baseline of both reads, which cover all of the traffic
however long the browser takes to start. ``ASGI_PERF_SCREENSHOTS=docs/img``
(``./scripts/screenshots``) writes the screenshots the docs show there instead of
``test-artifacts/``, after a longer run so the charts and the page's default 30 s window are full.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from asgi_perf.demo._run import generate

from .._browser import ARTIFACTS
from .._cdp import Page, chromium_page
from .._server import ROOT, ServerFactory

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WIDTHS = (1280, 1920)
SCREENSHOTS = bool(os.environ.get("ASGI_PERF_SCREENSHOTS"))
#: Seconds of demo traffic before the page is loaded: a full window for the docs' screenshots.
TRAFFIC_SECONDS = 35.0 if SCREENSHOTS else 3.0
#: The window of the page and of the JSON (seconds): the docs show the page's default.
WINDOW = 30.0 if SCREENSHOTS else 300.0
#: Everything the page shows per table row, by (table id, row key, field).
_CELLS = """
Object.fromEntries([...document.querySelectorAll("table[id] tbody tr[data-key]")].flatMap((tr) =>
  [...tr.querySelectorAll("td[data-field]")].map((td) =>
    [tr.closest("table").id + "|" + tr.dataset.key + "|" + td.dataset.field, td.textContent])))
"""
_TEXT = (
    "Object.fromEntries([...document.querySelectorAll('[id]')].map((e) => [e.id, e.textContent]))"
)
#: Elements whose content is wider than their box and that do not scroll: clipped or spilling.
_CLIPPED = """
[...document.querySelectorAll("body *")].filter((e) => {
  const x = getComputedStyle(e).overflowX;
  return e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0 && x !== "auto" && x !== "scroll";
}).map((e) => e.tagName + "#" + e.id + "." + e.className + " " + e.scrollWidth + ">" + e.clientWidth)
"""
_SCROLLERS = """
[...document.querySelectorAll(".scroll")].map((e) =>
  [e.querySelector("table").id, e.scrollWidth, e.clientWidth])
"""


def _ms(text: str) -> float:
    assert text.endswith(" ms"), text
    return float(text.removesuffix(" ms"))


def _uptime(text: str) -> int:
    """The page's uptime ("42s", "1m 5s", "1h 0m 5s") in whole seconds."""
    found = re.fullmatch(r"(?:(\d+)h )?(?:(\d+)m )?(\d+)s", text)
    assert found, text
    h, m, s = (int(part or 0) for part in found.groups())
    return h * 3600 + m * 60 + s


def _shots_dir() -> Path:
    target = os.environ.get("ASGI_PERF_SCREENSHOTS")
    directory = (ROOT / target) if target else ARTIFACTS
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _slow_reports(base: str, n: int) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(n):
            assert client.get("/reports/sales").status_code == 200


def _load(page: Page, url: str, width: int) -> None:
    page.open(url, width)
    page.wait_for("document.body.dataset.state === 'ready'")
    # Charts drawn from at least two monitor samples.
    page.wait_for("Number(document.getElementById('chart-rate').dataset.points) >= 2")


def _check_against_json(page: Page, summary: dict[str, Any]) -> None:
    cells: dict[str, str] = page.evaluate(_CELLS)
    text: dict[str, str] = page.evaluate(_TEXT)
    http = summary["http"]
    routes = {f"{r['method']} {r['route']}": r for r in http["routes"]}
    # Only the app's routes: the page's own polling is not in its figures.
    assert all(not r.startswith("GET /metrics") for r in routes), sorted(routes)
    assert text["http-in-progress"] == str(http["in_progress"]) == "0"
    assert text["http-requests"] == str(http["requests"])
    products = routes["GET /products/{product_id}"]
    key = "routes|GET /products/{product_id}|"
    assert cells[key + "requests"] == str(products["requests"])
    # The traffic ran within the window of both reads: the same observations, the same p95 (to
    # the shown precision; JavaScript's toFixed breaks ties unlike Python's round).
    assert products["p95"] is not None
    assert _ms(cells[key + "p95"]) == pytest.approx(products["p95"] * 1000, abs=0.051)
    assert _ms(text["http-p95"]) == pytest.approx(http["p95"] * 1000, abs=0.051)
    shown_window = float(page.evaluate("document.getElementById('window').dataset.seconds"))
    assert text["window"].startswith("last ")
    # The window asked for, or all the app has lived if less, in each read (the page's and the
    # JSON's, made at different times): never just the time since the last poll.
    assert shown_window == pytest.approx(min(WINDOW, _uptime(text["uptime"])), abs=3)
    assert summary["window"]["seconds"] == pytest.approx(
        min(WINDOW, summary["uptime_seconds"]), abs=3
    )
    # The page's rate: the same requests over the window of its own read (to the shown precision).
    assert float(cells[key + "rate"]) == pytest.approx(
        products["requests"] / shown_window, rel=1e-3, abs=0.0051
    )
    (engine,) = summary["db"]["engines"]
    assert cells["db|demo|queries"] == str(engine["queries"])
    assert cells["db|demo|slow"] == str(engine["slow"])
    # One row per slow statement shape, not one per run.
    groups = summary["db"]["slow_query_groups"]
    (report,) = [g for g in groups if "demo_sleep" in g["sql"]]
    assert report["count"] >= 5
    assert sum(g["count"] for g in groups) == engine["slow"]
    row = f"slow-queries|{report['fingerprint']}|"
    assert cells[row + "count"] == str(report["count"])
    assert _ms(cells[row + "max"]) == pytest.approx(report["max"] * 1000, abs=0.051)
    assert _ms(cells[row + "p95"]) == pytest.approx(report["p95"] * 1000, abs=0.051)
    assert cells[row + "sql"] == report["sql"]
    assert cells[row + "last_seen"].endswith(" ago")
    assert sum(1 for k in cells if k.startswith("slow-queries|") and k.endswith("|sql")) == len(
        groups
    )
    for cache in summary["cache"]["caches"]:
        assert cells[f"caches|{cache['cache']}|hits"] == str(cache["hits"])


def _check_layout(page: Page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.evaluate(_CLIPPED) == []
    for table, scroll_width, client_width in page.evaluate(_SCROLLERS):
        # Every table fits its box at these widths (narrower screens scroll inside the box).
        assert scroll_width <= client_width, (width, table, scroll_width, client_width)


def _check_chart(page: Page) -> None:
    box = page.evaluate(
        "(() => { const r = document.querySelector('#chart-rate .u-over').getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; })()"
    )
    left, top, w, h = box
    assert w > 100
    assert h > 50
    # Axes: a time axis and a value axis, each with its labelled ticks drawn by the library.
    assert page.evaluate("document.querySelectorAll('#chart-rate .u-axis').length") == 2
    legend = (
        "[...document.querySelectorAll('#chart-rate .u-legend .u-value')].map((v) => v.textContent)"
    )
    # Off the plot the legend holds the latest point; under the cursor, the point there.
    page.hover(1, 1)
    idle_time, idle_value = page.wait_for(
        f"(() => {{ const v = {legend}; return v[0].includes(':') && v; }})()"
    )
    float(idle_value)
    page.hover(left + w * 0.05, top + h / 2)
    hovered_time, hovered_value = page.wait_for(
        f"(() => {{ const v = {legend}; return v[0] !== {idle_time!r} && v; }})()"
    )
    assert ":" in hovered_time
    float(hovered_value)  # the rate under the cursor, a number
    page.hover(1, 1)


def test_demo_dashboard_in_chromium(server: ServerFactory) -> None:
    """At 1280 and 1920 px the demo's dashboard shows the JSON's figures over a window of at least
    its refresh, slow queries grouped, tables that fit, charts with axes and hover values; no
    console error, no CSP violation."""
    base = server("asgi_perf.demo:create_app", "--factory", ready_path="/metrics")
    # Asked for before any traffic, the window keeps the app's start as its baseline from now on.
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.get(f"/metrics/summary?window={WINDOW:g}").status_code == 200
    traffic = asyncio.run(generate(base, TRAFFIC_SECONDS, 4, io.StringIO()))
    assert traffic.requests > 0
    _slow_reports(base, 5)
    with httpx.Client(base_url=base) as client:
        # A monitor sample after the traffic, so the charts hold it.
        done = time.time()
        page_url = f"{base}/metrics/dashboard" + ("" if SCREENSHOTS else f"?window={WINDOW:g}")
        with chromium_page() as page:
            for width in WIDTHS:
                _load(page, page_url, width)
                page.wait_for(
                    "fetch('history?limit=1').then((r) => r.json())"
                    f".then((h) => h.snapshots.length && h.snapshots[0].time > {done})"
                )
                _load(page, page_url, width)  # again: the charts now hold the traffic
                summary = client.get(f"/metrics/summary?window={WINDOW:g}").json()
                _check_against_json(page, summary)
                _check_layout(page, width)
                _check_chart(page)
                page.screenshot(_shots_dir() / f"dashboard-{width}.png", width)
            # Narrower than the tables: they scroll inside their own boxes, the page does not.
            page.resize(800, 900)
            page.evaluate(
                "new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"
            )
            assert page.evaluate("document.documentElement.scrollWidth") <= 800
            assert page.evaluate(_CLIPPED) == []
            assert any(sw > cw for _, sw, cw in page.evaluate(_SCROLLERS))
            assert page.csp_violations() == []
            assert page.console == []
            # The clipping check is not vacuous: a box that hides what overflows it is named.
            page.evaluate(
                "(() => { const d = document.createElement('div'); d.id = 'narrow';"
                " d.style.width = '100px'; d.style.overflow = 'hidden';"
                " d.style.whiteSpace = 'nowrap'; d.textContent = 'x'.repeat(200);"
                " document.body.append(d); })()"
            )
            assert [c for c in page.evaluate(_CLIPPED) if c.startswith("DIV#narrow")]

"""The live dashboard page in a real headless Chromium, against a real uvicorn app."""

from __future__ import annotations

import base64
import time

import httpx
import pytest

from .._browser import ARTIFACTS, Dom, browser, chromium
from .._server import ServerFactory

pytestmark = pytest.mark.e2e


def _shown_ms(text: str) -> float:
    assert text.endswith(" ms"), text
    return float(text.removesuffix(" ms"))


@pytest.mark.slow
def test_dashboard_in_chromium_shows_the_json(server: ServerFactory) -> None:
    """Loaded in headless Chromium, the page's tiles and tables show what the JSON holds."""
    binary = chromium()
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
        result = browser(binary, f"{base}/metrics/dashboard", "--dump-dom")
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
    slow = summary["db"]["slow_query_groups"][0]
    assert dom.cells[("abc123", "sql")] == slow["sql"]  # shown as text, not markup
    assert dom.cells[("abc123", "p95")] == "1250.0 ms"
    assert dom.cells[("abc123", "max")] == "1500.0 ms"
    assert dom.cells[("abc123", "count")] == "3"
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
    taken = browser(
        binary,
        f"{base}/metrics/dashboard",
        f"--screenshot={shot}",
        "--window-size=1400,1700",
        "--hide-scrollbars",
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == base64.b64decode("iVBORw0KGgo=")

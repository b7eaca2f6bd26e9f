"""`asgi-perf demo` end to end: the printed report, a scrape during the run, rule and dashboard
metric names against that scrape, and the live dashboard in headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from asgi_perf.cli import main
from asgi_perf.demo._app import DemoFailure, build_demo, demo_rules
from asgi_perf.demo._run import BACKGROUND_PAUSE, ERR_CONCURRENCY, ERR_DURATION, generate, serve
from asgi_perf.export import grafana_dashboard, prometheus_rules

from .._browser import ARTIFACTS, Dom, browser, chromium
from .._promql import metric_names, rule_exprs
from .._server import ServerFactory, free_port

pytestmark = pytest.mark.e2e

#: Metrics only a fault labels (a swallowed error in a component, a series cap reached): a healthy
#: demo declares them with no samples. (Pool timeouts and dropped batch items export zeros.)
FAULT_ONLY = {"asgi_perf_instrumentation_errors_total", "asgi_perf_series_overflow_total"}
_SUFFIX = re.compile(r"(_bucket|_sum|_count|_total|_created)$")


def base_name(name: str) -> str:
    """A sample or family name without its counter/histogram suffix."""
    return _SUFFIX.sub("", name)


@dataclass
class Run:
    code: int
    out: str
    scrape: str
    summary: dict[str, Any]


def _wait_for_figures(base: str, thread: threading.Thread) -> tuple[str, dict[str, Any]]:
    """Scrape once every component has reported something (or the run ended)."""
    summary: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=10) as client:
        while thread.is_alive():
            try:
                summary = client.get("/metrics/summary").json()
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            engines = summary["db"]["engines"]
            caches = summary["cache"]["caches"]
            if (
                summary["socketio"]["connections"] >= 1
                and summary["socketio"]["batches"] >= 1
                and engines
                and engines[0]["slow"] >= 1
                and len(caches) == 2
                and all(c["hits"] and c["misses"] for c in caches)
                and summary["http"]["requests"] >= 50
                and any(r["route"] == "/error" for r in summary["http"]["routes"])
            ):
                return client.get("/metrics").text, summary
            time.sleep(0.2)
    raise AssertionError(f"the demo ended before every component reported: {summary}")


@pytest.fixture(scope="module")
def demo_run() -> Run:
    """`asgi-perf demo --traffic --duration 5` in-process, with a scrape taken during the run."""
    port = free_port()
    argv = ["demo", "--traffic", "--duration", "5", "--port", str(port), "--concurrency", "4"]
    codes: list[int] = []
    out = io.StringIO()
    thread = threading.Thread(target=lambda: codes.append(main(argv)), daemon=True)
    with contextlib.redirect_stdout(out):
        thread.start()
        try:
            scrape, summary = _wait_for_figures(f"http://127.0.0.1:{port}", thread)
        finally:
            thread.join(timeout=120)
    assert not thread.is_alive()
    return Run(codes[0], out.getvalue(), scrape, summary)


@pytest.mark.slow
def test_demo_prints_urls_progress_and_report(demo_run: Run) -> None:
    """The run exits 0 and prints the URLs, the progress line and a report of every component."""
    out = demo_run.out
    assert demo_run.code == 0, out
    base = re.search(r"(http://127\.0\.0\.1:\d+)/metrics\n", out)
    assert base is not None, out
    for path in ("/metrics/dashboard", "/metrics/summary", "/metrics"):
        assert f"{base.group(1)}{path}\n" in out
    assert "Socket.IO clients" in out
    assert "s left" in out
    sent = int(out.split("Sent ")[1].split(" requests")[0])
    assert sent >= 50
    report = out.split("HTTP (since start)\n", 1)[1]
    rows = {
        line.split()[1]: line.split()
        for line in report.splitlines()
        if line.startswith(("  GET", "  POST"))
    }
    assert int(rows["/products/{product_id}"][2]) > 0
    assert int(rows["/error"][3]) == int(rows["/error"][2]) > 0  # every /error is a 500
    assert int(rows["__unmatched__"][3]) == 0  # 404s are not errors
    engine = re.search(r"engine demo: (\d+) queries, 0 errors, (\d+) slow", report)
    assert engine is not None, report
    assert int(engine.group(1)) > int(engine.group(2)) > 0
    assert "SELECT demo_sleep(?)" in report  # the slow query's shape, never its parameters
    # One line per slow statement shape, with its count: not the same statement three times.
    slow = [line for line in report.splitlines() if line.startswith("    slow x")]
    assert len(slow) == len({line.split("  ")[-1] for line in slow}) >= 1
    assert 0 < sum(int(line.split()[1].lstrip("x")) for line in slow) <= int(engine.group(2))
    for cache in ("products", "categories"):
        assert re.search(rf"  {cache} +hit ratio +\d+\.\d%", report), report
    clients = re.search(r"3 clients received .*?(\d+) price", report)
    assert clients is not None, report
    assert int(clients.group(1)) > 0
    assert "0 client errors" in report
    assert re.search(r"Alerts firing: \d+", report)


@pytest.mark.slow
def test_scrape_during_the_run_has_every_component(demo_run: Run) -> None:
    """Mid-run, /metrics holds HTTP, Socket.IO, DB, cache, alert and system samples."""
    scrape = demo_run.scrape
    for needle in (
        'http_requests_total{method="GET",route="/products/{product_id}",status="200"}',
        'http_requests_total{method="GET",route="/error",status="500"}',
        'db_query_duration_seconds_count{engine="demo",operation="SELECT",outcome="ok"}',
        'db_slow_queries_total{engine="demo",operation="SELECT"}',
        'cache_requests_total{cache="products",result="hit"}',
        'cache_requests_total{cache="categories",result="miss"}',
        'socketio_connections{namespace="/",transport="websocket"}',
        'socketio_batches_total{event="price"',
        "asgi_perf_alerts_firing{",
        "system_memory_ratio ",
    ):
        assert needle in scrape, needle
    assert "/socket.io" not in scrape  # the Socket.IO transport stays out of the HTTP metrics
    assert demo_run.summary["socketio"]["connections"] >= 1


def test_every_rule_and_dashboard_metric_is_in_the_demo_scrape(demo_run: Run) -> None:
    """Each metric the shipped rules and Grafana dashboard query exists in the demo's scrape;
    all but the fault-only ones have samples."""
    records, exprs = rule_exprs(prometheus_rules())
    board = grafana_dashboard()
    exprs += [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    used = {base_name(n) for e in exprs for n in metric_names(e)} - records
    declared = {
        base_name(line.split()[2])
        for line in demo_run.scrape.splitlines()
        if line.startswith("# TYPE ")
    }
    sampled = {
        base_name(re.split(r"[{ ]", line, maxsplit=1)[0])
        for line in demo_run.scrape.splitlines()
        if line and not line.startswith("#")
    }
    assert len(used) > 20
    assert used - declared == set()
    assert used - sampled == {base_name(name) for name in FAULT_ONLY}


def _free_port_taken() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_demo_port_in_use_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    """A port that is taken ends the demo with uvicorn's non-zero exit code and no URLs."""
    with _free_port_taken() as sock:
        code = main(["demo", "--port", str(sock.getsockname()[1])])
    assert code != 0
    assert "demo is running" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--duration", "0"], ERR_DURATION.format(0.0)),
        (["--duration", "inf"], ERR_DURATION.format(float("inf"))),
        (["--concurrency", "0"], ERR_CONCURRENCY.format(0)),
    ],
)
def test_demo_refuses_bad_options(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-positive duration or concurrency is refused with exit code 2 and a clear message."""
    assert main(["demo", "--traffic", *argv]) == 2
    assert capsys.readouterr().err == f"asgi-perf demo: {message}\n"


def test_serve_without_traffic_runs_until_stopped() -> None:
    """Without --traffic the demo serves (index, dashboard, a 500 from /error) until stopped."""
    out = io.StringIO()
    seen: dict[str, Any] = {}

    async def visit(server: Any) -> None:
        base = f"http://127.0.0.1:{server.config.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            seen["index"] = (await client.get("/")).text
            seen["dashboard"] = (await client.get("/metrics/dashboard")).status_code
            seen["error"] = (await client.get("/error")).status_code
            seen["bad order"] = (await client.post("/orders", content=b"{}")).status_code
            seen["bad category"] = (await client.get("/categories/nope")).status_code
            seen["no product"] = (await client.get("/products/99999")).status_code
        server.should_exit = True

    code = asyncio.run(serve("127.0.0.1", free_port(), False, 1.0, 1, out, visit))
    assert code == 0
    assert "Press Ctrl-C to stop." in out.getvalue()
    assert "/metrics/dashboard" in seen["index"]
    assert seen["dashboard"] == 200
    assert seen["error"] == 500
    assert seen["bad order"] == 422
    assert seen["bad category"] == seen["no product"] == 404


def test_serve_sends_itself_light_traffic_by_default() -> None:
    """A plain `demo` run loads itself (HTTP and Socket.IO) so the dashboard is not empty, and the
    load stops with the server."""
    out = io.StringIO()
    seen: dict[str, Any] = {}

    async def watch(server: Any) -> None:
        base = f"http://127.0.0.1:{server.config.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(400):  # bounded wait for the background load to show in the metrics
                text = (await client.get("/metrics")).text
                products = re.search(
                    r'http_requests_total\{[^}]*route="/products/\{product_id\}"', text
                )
                sockets = re.search(r"^socketio_connections\{[^}]*\} 1\.0$", text, re.M)
                if products and sockets:
                    seen["loaded"] = True
                    break
                await asyncio.sleep(0.05)
        server.should_exit = True

    code = asyncio.run(
        serve("127.0.0.1", free_port(), False, 1.0, 1, out, watch, background_traffic=True)
    )
    assert code == 0
    assert seen.get("loaded"), "no background requests and Socket.IO client seen in /metrics"
    assert "--no-background-traffic" in out.getvalue()


def test_serve_without_background_traffic_stays_idle() -> None:
    """`--no-background-traffic`: the demo serves but sends nothing to itself."""
    out = io.StringIO()
    seen: dict[str, str] = {}

    async def look(server: Any) -> None:
        await asyncio.sleep(BACKGROUND_PAUSE * 4)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.config.port}") as client:
            seen["metrics"] = (await client.get("/metrics")).text
        server.should_exit = True

    assert asyncio.run(serve("127.0.0.1", free_port(), False, 1.0, 1, out, look)) == 0
    assert 'route="/products/{product_id}"' not in seen["metrics"]
    assert "light traffic" not in out.getvalue()


def test_cli_turns_background_traffic_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI passes --no-background-traffic through to the demo; it is on by default."""
    from asgi_perf import demo

    calls: list[bool] = []

    def fake_run_demo(**kwargs: Any) -> int:
        calls.append(kwargs["background_traffic"])
        return 0

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert main(["demo"]) == 0
    assert main(["demo", "--no-background-traffic"]) == 0
    assert calls == [True, False]


def test_demo_rules_trip_quickly() -> None:
    """The demo adds two short-window rules to the defaults so alerts fire during a run."""
    rules = {rule.name: rule for rule in demo_rules()}
    assert rules["DemoErrors"].for_seconds <= 2
    assert rules["DemoSlowQueries"].metric == "db.slow_per_minute"
    assert "HighCpu" in rules


def test_only_the_demo_failure_is_kept_out_of_the_server_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The filter drops uvicorn's record of /error's DemoFailure and keeps every other error."""
    import logging

    from asgi_perf.demo._run import _DropDemoFailures

    quiet = _DropDemoFailures()

    def record(exc: BaseException | None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc is not None else None
        return logging.LogRecord("uvicorn.error", logging.ERROR, "", 0, "boom", (), info)

    assert not quiet.filter(record(DemoFailure("demo failure")))
    assert quiet.filter(record(RuntimeError("real")))
    assert quiet.filter(record(None))


@pytest.mark.anyio
async def test_build_demo_on_a_given_workdir_calls_back_on_alerts(tmp_path: Any) -> None:
    """build_demo() with a workdir keeps the database there and calls on_alert for each alert."""
    got: list[dict[str, Any]] = []
    demo = build_demo(workdir=tmp_path, on_alert=got.append)
    alert = {"rule": "DemoErrors", "state": "firing"}
    assert demo.ops.alerts is not None
    notifier = demo.ops.alerts.notifiers[0]
    notifier.notify(alert, lambda outcome: None)
    assert got == [alert]
    assert demo.alerts == [alert]
    assert demo.workdir == tmp_path
    await demo.engine.dispose()


@pytest.mark.slow
def test_dashboard_of_the_running_demo_in_chromium(server: ServerFactory) -> None:
    """In headless Chromium the demo's dashboard shows the figures of every component."""
    binary = chromium()
    base = server("asgi_perf.demo:create_app", "--factory", ready_path="/metrics")
    traffic = asyncio.run(generate(base, 3.0, 4, io.StringIO()))
    assert traffic.requests > 0
    assert traffic.sockets == 3
    with httpx.Client(base_url=base) as client:
        # Wait for a monitor sample after the traffic, so the page and the JSON see one window.
        done = time.time()
        for _ in range(200):
            snaps = client.get("/metrics/history").json()["snapshots"]
            if snaps and snaps[-1]["time"] > done:
                break
            time.sleep(0.05)
        result = browser(binary, f"{base}/metrics/dashboard", "--dump-dom")
        summary = client.get("/metrics/summary").json()
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Dom()
    dom.feed(result.stdout)
    assert dom.body.get("data-state") == "ready", result.stdout[:2000]

    routes = {f"{r['method']} {r['route']}": r for r in summary["http"]["routes"]}
    products = routes["GET /products/{product_id}"]
    assert dom.cells[("GET /products/{product_id}", "requests")] == str(products["requests"])
    assert dom.cells[("GET /error", "errors")] == str(routes["GET /error"]["errors"])
    (engine,) = summary["db"]["engines"]
    assert dom.cells[("demo", "queries")] == str(engine["queries"])
    assert int(dom.cells[("demo", "slow")]) == engine["slow"] > 0
    assert dom.cells[("demo", "pool_size")] == str(engine["pool"]["size"])
    for cache in summary["cache"]["caches"]:
        name = cache["cache"]
        # toFixed on the page and Python's format break ties differently: compare numbers.
        shown = float(dom.cells[(name, "hit_ratio")].removesuffix("%"))
        assert shown == pytest.approx(cache["hit_ratio"] * 100, abs=0.051)
        assert dom.cells[(name, "hits")] == str(cache["hits"])
    assert {c["cache"] for c in summary["cache"]["caches"]} == {"products", "categories"}
    sio = summary["socketio"]
    assert dom.kv["events_received"] == str(round(sio["events_received"])) != "0"
    assert dom.kv["batches"] == str(round(sio["batches"])) != "0"
    assert dom.cells[("reports.sales", "count")] == str(
        summary["timers"]["timers"]["reports.sales"]["count"]
    )
    assert dom.kv["memory_percent"].endswith("%")
    assert dom.by_id["alerts-firing"].isdigit()

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "demo-dashboard.png"
    shot.unlink(missing_ok=True)
    taken = browser(
        binary, f"{base}/metrics/dashboard", f"--screenshot={shot}", "--window-size=1400,1900"
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.stat().st_size > 0

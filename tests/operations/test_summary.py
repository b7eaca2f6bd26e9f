"""registry.summary(): per-component figures read back from the registry's samples."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_perf import PerfRegistry, instrument
from asgi_perf.cache import LRUCache, TTLCache
from asgi_perf.cache.redis import TieredCache
from asgi_perf.operations import AlertManager, Summary, SystemFigures
from asgi_perf.operations._keys import SUMMARIZER
from asgi_perf.operations._summary import (
    BASELINE_SHARE,
    BASELINE_SPACING,
    KEPT_WINDOW,
    MAX_WINDOW,
    Summarizer,
    alert_figures,
)
from asgi_perf.operations._system import ERR_NO_PSUTIL, SystemCollector, SystemSampler
from asgi_perf.registry import SLOW_QUERIES
from asgi_perf.testing import sample

from .._ops import mismatches
from .._time import FakeClock


def _app(registry: PerfRegistry) -> Starlette:
    async def ok(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def bad(request: Request) -> Response:
        return PlainTextResponse("no", status_code=500)

    app = Starlette(routes=[Route("/ok/{n}", ok), Route("/bad", bad)])
    instrument(app, registry=registry)
    return app


@pytest.mark.anyio
async def test_http_routes_from_real_requests(registry: PerfRegistry) -> None:
    """Routes show requests, errors, error rate and percentiles of the requests really made."""
    app = _app(registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for i in range(9):
            await client.get(f"/ok/{i}")
        await client.get("/bad")
    summary = registry.summary()
    routes = {(r["method"], r["route"]): r for r in summary["http"]["routes"]}
    ok = routes[("GET", "/ok/{n}")]
    assert ok["requests"] == 9
    assert ok["errors"] == 0
    assert ok["error_rate"] == 0.0
    assert ok["p50"] is not None
    assert ok["p95"] is not None
    assert ok["p99"] is not None
    assert ok["p50"] <= ok["p95"] <= ok["p99"]
    assert routes[("GET", "/bad")]["error_rate"] == 1.0
    assert summary["http"]["requests"] == 10
    assert summary["http"]["errors"] == 1
    assert summary["http"]["error_rate"] == pytest.approx(0.1)


def _seed(registry: PerfRegistry) -> None:
    db = registry.histogram("db_query_duration_seconds")
    for _ in range(19):
        db.labels("main", "SELECT", "ok").observe(0.003)
    db.labels("main", "UPDATE", "error").observe(2.0)
    db.labels("main", "SELECT", "cancelled").observe(0.1)
    registry.counter("db_slow_queries_total").labels("main", "UPDATE").inc(2)
    registry.gauge("db_pool_size").labels("main").set(5)
    registry.gauge("db_pool_checked_out").labels("main").set(3)
    registry.counter("db_pool_checkout_timeouts_total").labels("main").inc()
    registry.histogram("db_queries_per_request").labels("main").observe(4)
    registry.histogram("db_pool_checkout_seconds").labels("main").observe(0.001)
    cache = registry.counter("cache_requests_total")
    cache.labels("users", "hit").inc(30)
    cache.labels("users", "miss").inc(10)
    registry.gauge("cache_entries").labels("users").set(40)
    registry.gauge("cache_maxsize").labels("users").set(100)
    registry.counter("cache_evictions_total").labels("users", "capacity").inc(3)
    registry.counter("cache_evictions_total").labels("users", "expired").inc(2)
    registry.histogram("cache_load_duration_seconds").labels("users").observe(0.02)
    registry.gauge("socketio_connections").labels("/", "websocket").set(7)
    registry.gauge("socketio_connections").labels("/chat", "polling").set(2)
    registry.counter("socketio_events_received_total").labels("/", "msg").inc(50)
    registry.counter("socketio_events_emitted_total").labels("/", "msg").inc(150)
    registry.counter("socketio_batches_total").labels("msg", "size").inc(3)
    registry.histogram("socketio_batch_items").labels().observe(50)
    registry.histogram("socketio_batch_wait_seconds").labels().observe(0.008)
    registry.gauge("socketio_batch_pending").labels().set(6)
    registry.gauge("socketio_queue_depth_max").labels().set(11)
    registry.counter("socketio_batch_dropped_total").labels("overflow").inc(1)


class SlowLog:
    def __init__(self) -> None:
        self.rows = [
            {
                "engine": "main",
                "operation": "UPDATE",
                "fingerprint": "f1",
                "sql": "UPDATE t SET a = ?",
                "duration": 2.0,
                "time": 1.0,
                "count": 2,
            },
            {
                "engine": "other",
                "operation": "SELECT",
                "fingerprint": "f2",
                "sql": "SELECT 1",
                "duration": 1.5,
                "time": 2.0,
                "count": 1,
            },
        ]

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self.rows[:limit]

    def groups(self, limit: int | None = None) -> list[dict[str, Any]]:
        return [
            {
                "engine": "main",
                "operation": "UPDATE",
                "fingerprint": "f1",
                "sql": "UPDATE t SET a = ?",
                "count": 2,
                "p95": 2.0,
                "max": 2.0,
                "last_seen": 1.0,
            }
        ][:limit]


def test_db_cache_socketio_sections_from_catalogue_samples(registry: PerfRegistry) -> None:
    """Samples made under the catalogue names appear in their sections with the right figures."""
    _seed(registry)
    registry.component(SLOW_QUERIES, SlowLog)
    summary = registry.summary()
    (engine,) = summary["db"]["engines"]
    assert engine["engine"] == "main"
    assert (engine["queries"], engine["errors"], engine["cancelled"]) == (21, 1, 1)
    assert engine["slow"] == 2
    assert engine["pool"] == {
        "size": 5,
        "checked_out": 3,
        "checkout_timeouts": 1,
        "checkout_p95": pytest.approx(0.00095),
    }
    assert engine["queries_per_request"] == 4
    assert engine["p95"] is not None
    assert [q["fingerprint"] for q in engine["recent_slow"]] == ["f1"]
    assert len(summary["db"]["slow_queries"]) == 2
    (group,) = summary["db"]["slow_query_groups"]
    assert (group["fingerprint"], group["count"], group["p95"], group["max"]) == ("f1", 2, 2.0, 2.0)
    (cache,) = summary["cache"]["caches"]
    assert (cache["hits"], cache["misses"], cache["hit_ratio"]) == (30, 10, 0.75)
    assert (cache["entries"], cache["maxsize"]) == (40, 100)
    assert cache["evictions"] == {"capacity": 3, "expired": 2}
    assert cache["load_p95"] is not None
    sio = summary["socketio"]
    assert sio["enabled"]
    assert sio["connections"] == 9
    assert sio["connections_by_namespace"] == {"/": 7, "/chat": 2}
    assert (sio["events_received"], sio["events_emitted"], sio["batches"]) == (50, 150, 3)
    assert sio["batch_items_avg"] == 50
    assert sio["batch_pending"] == 6
    assert sio["queue_depth_max"] == 11
    assert sio["batch_dropped"] == {"overflow": 1}


def test_empty_registry_summary_has_every_section(registry: PerfRegistry) -> None:
    """With nothing recorded, every section exists and holds no made-up numbers."""
    summary = registry.summary()
    assert summary["http"]["routes"] == []
    assert summary["http"]["error_rate"] is None
    assert summary["db"] == {"engines": [], "slow_queries": [], "slow_query_groups": []}
    assert summary["cache"] == {"caches": []}
    assert summary["socketio"]["enabled"] is False
    assert summary["alerts"] == {"enabled": False, "firing": [], "pending": []}
    assert summary["timers"] == {"timers": {}, "counters": {}}
    assert summary["system"]["memory_percent"] is not None
    figures = alert_figures(summary)
    assert figures["http.error_rate"] is None
    assert figures["cache.hit_ratio"] is None


def test_summary_follows_the_schema(registry: PerfRegistry) -> None:
    """Empty or full, the summary has exactly the keys and value types of the ``Summary`` schema
    the dashboard, the report CLI and the alert figures read."""
    assert mismatches(registry.summary(), Summary) == []
    _seed(registry)
    registry.component(SLOW_QUERIES, SlowLog)
    registry.count("orders", 2)
    with registry.timer("report"):
        pass
    AlertManager(registry)
    summary = registry.summary()
    assert summary["db"]["engines"]
    assert summary["cache"]["caches"]
    assert summary["timers"]["timers"]
    assert mismatches(summary, Summary) == []


def test_schema_check_finds_what_departs(registry: PerfRegistry) -> None:
    """The schema check is not vacuous: an extra key, a missing key, a wrong type are named."""
    summary: Any = registry.summary()
    summary["http"]["extra"] = 1
    del summary["window"]["end"]
    summary["socketio"]["connections"] = "many"
    found = mismatches(summary, Summary)
    assert "summary.http: unexpected extra" in found
    assert "summary.window: missing end" in found
    assert any(m.startswith("summary.socketio.connections:") for m in found)


def test_namespace_is_honoured() -> None:
    """A namespaced registry's samples are found under their catalogue names."""
    registry = PerfRegistry(namespace="shop")
    registry.counter("cache_requests_total").labels("c", "hit").inc(2)
    assert registry.summary()["cache"]["caches"][0]["hits"] == 2


def test_windows_advance_and_rates_use_them(registry: PerfRegistry) -> None:
    """Rates and window ratios cover the time since the previous advance, with a fake clock."""
    clock = FakeClock(registry.started_at)
    summarizer = Summarizer(registry, clock=clock)
    hits = registry.counter("cache_requests_total")
    hits.labels("c", "hit").inc(10)
    clock.now += 10
    first = summarizer.build(advance=True)
    assert first["cache"]["caches"][0]["window_hit_ratio"] == 1.0
    hits.labels("c", "miss").inc(20)
    registry.counter("db_slow_queries_total").labels("e", "SELECT").inc(6)
    clock.now += 60
    second = summarizer.build()
    cache = second["cache"]["caches"][0]
    assert cache["window_requests"] == 20
    assert cache["window_hit_ratio"] == 0.0
    assert cache["hit_ratio"] == pytest.approx(1 / 3, abs=1e-6)
    assert second["db"]["engines"][0]["slow_per_minute"] == 6.0
    assert second["window"]["seconds"] == 60
    # build() without advance does not move the window.
    assert summarizer.build()["window"]["seconds"] == 60


def test_broken_slow_query_component_is_reported(registry: PerfRegistry) -> None:
    """A slow-query log that raises leaves the summary intact and is counted as an error."""

    class Broken:
        def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
            raise RuntimeError("broken")

        def groups(self, limit: int | None = None) -> list[dict[str, Any]]:
            raise AssertionError("not reached")  # pragma: no cover

    registry.component(SLOW_QUERIES, Broken)
    assert registry.summary()["db"]["slow_queries"] == []
    assert sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "summary"}) == 1
    # The next summary names the component as a plain key (JSON object keys are strings).
    assert registry.summary()["instrumentation"]["errors"] == {"summary": 1.0}


def test_summary_names_overflowing_metrics_by_name(registry: PerfRegistry) -> None:
    """Series overflow in the summary is keyed by the metric's name, as the JSON shows it."""
    registry.counter("asgi_perf_series_overflow_total").labels("http_requests_total").inc(3)
    assert registry.summary()["instrumentation"]["series_overflow"] == {"http_requests_total": 3.0}


def test_alert_figures_take_the_worst_busy_series(registry: PerfRegistry) -> None:
    """Alert figures use the worst series, and ignore ratios over too few requests."""
    _seed(registry)
    registry.counter("cache_requests_total").labels("tiny", "miss").inc(2)
    figures = alert_figures(registry.summary())
    assert figures["cache.hit_ratio"] == 0.75  # "tiny" has 2 requests: below the minimum
    assert figures["db.pool_checkout_timeouts"] == 1
    assert figures["socketio.queue_depth"] == 11
    assert figures["socketio.batch_pending"] == 6
    assert figures["db.p95_seconds"] is not None


# -- system figures ---
def _proc_tree(tmp_path: Any, busy: int, idle: int) -> str:
    (tmp_path / "self" / "fd").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (tmp_path / "self" / "fd" / str(i)).write_text("")
    (tmp_path / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    (tmp_path / "meminfo").write_text(
        "MemTotal:       1000 kB\nMemFree:        100 kB\nMemAvailable:   250 kB\n"
    )
    (tmp_path / "self" / "statm").write_text("100 25 3 1 0 20 0\n")
    return str(tmp_path)


def test_proc_fallback_reads_procfs(tmp_path: Any) -> None:
    """Without psutil, CPU, memory, RSS and fds come from /proc (here a fixture tree)."""
    import os

    proc = _proc_tree(tmp_path, busy=100, idle=300)
    wall = FakeClock(0.0)
    cpu = FakeClock(0.0)
    sampler = SystemSampler(use_psutil=False, proc=proc, clock=wall, cpu_clock=cpu)
    _proc_tree(tmp_path, busy=150, idle=350)
    wall.now, cpu.now = 10.0, 2.5
    figures = sampler.read()
    assert figures["source"] == "proc"
    assert figures["cpu_percent"] == 50.0
    assert figures["memory_percent"] == 75.0
    assert figures["rss_bytes"] == 25 * os.sysconf("SC_PAGE_SIZE")
    assert figures["open_fds"] == 3
    assert figures["process_cpu_percent"] == 25.0
    assert figures["disk_percent"] is not None


def test_missing_procfs_gives_none(tmp_path: Any) -> None:
    """Figures that cannot be read are None, never a made-up zero."""
    sampler = SystemSampler(
        use_psutil=False, proc=str(tmp_path / "nothing"), disk_path=str(tmp_path / "no")
    )
    figures = sampler.read()
    for key in ("cpu_percent", "memory_percent", "rss_bytes", "open_fds", "disk_percent"):
        assert figures[key] is None


def test_psutil_path_and_forcing() -> None:
    """With psutil installed it is used by default; use_psutil=True insists on it.

    psutil is a dev dependency: a missing psutil fails this test (ERR_NO_PSUTIL), never skips it.
    """
    assert SystemSampler().source == "psutil"
    sampler = SystemSampler(use_psutil=True)
    figures = sampler.read()
    assert figures["source"] == "psutil"
    assert figures["rss_bytes"] is not None
    assert figures["rss_bytes"] > 0
    assert figures["open_fds"] is not None
    assert figures["open_fds"] > 0
    assert ERR_NO_PSUTIL.startswith("use_psutil=True")


def test_system_collector_exports_ratios(registry: PerfRegistry, tmp_path: Any) -> None:
    """The system_* gauges are ratios 0-1 read at scrape time; unreadable ones are left out."""
    proc = _proc_tree(tmp_path, busy=100, idle=300)
    sampler = SystemSampler(use_psutil=False, proc=proc)
    registry.register(SystemCollector(registry, sampler))
    _proc_tree(tmp_path, busy=200, idle=400)
    assert sample(registry, "system_memory_ratio") == 0.75
    assert sample(registry, "system_process_open_fds") == 3
    assert sample(registry, "system_disk_ratio", {"path": "/"}) is not None


def test_each_cpu_reader_keeps_its_own_window(registry: PerfRegistry, tmp_path: Any) -> None:
    """A summary read, a monitor sample and a scrape each see the CPU since their own last read.

    Reading the summary must not run the ``system_*`` collector (whose window is the time between
    scrapes), and a read-only summary must not shorten the monitor's window, nor the reverse.
    """
    from asgi_perf.operations import Monitor

    proc = _proc_tree(tmp_path, busy=100, idle=300)
    registry.register(SystemCollector(registry, SystemSampler(use_psutil=False, proc=proc)))
    sampler = SystemSampler(use_psutil=False, proc=proc)
    registry.component(SUMMARIZER, lambda: Summarizer(registry, sampler=sampler))
    monitor = Monitor(registry, interval=60)
    _proc_tree(tmp_path, busy=200, idle=400)  # 100 of 200 jiffies busy since every reader began
    assert registry.summary()["system"]["cpu_percent"] == 50.0
    assert monitor.sample()["system"]["cpu_percent"] == 50.0
    assert sample(registry, "system_cpu_ratio") == 0.5
    _proc_tree(tmp_path, busy=200, idle=500)  # then 100 idle jiffies
    assert registry.summary()["system"]["cpu_percent"] == 0.0
    assert monitor.sample()["system"]["cpu_percent"] == 0.0
    assert sample(registry, "system_cpu_ratio") == 0.0


def test_system_collector_failure_is_fail_open(registry: PerfRegistry) -> None:
    """A sampler that raises empties the system gauges for that scrape and is counted."""

    class Broken(SystemSampler):
        def read(self) -> SystemFigures:
            raise OSError("gone")

    registry.register(SystemCollector(registry, Broken(use_psutil=False)))
    assert sample(registry, "system_memory_ratio") is None
    assert sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "system"}) == 1


def test_without_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psutil the sampler falls back to /proc; insisting on psutil is an error."""
    import sys

    monkeypatch.setitem(sys.modules, "psutil", None)
    assert SystemSampler().source == "proc"
    with pytest.raises(ValueError, match="psutil is not installed"):
        SystemSampler(use_psutil=True)


def test_odd_procfs_contents(tmp_path: Any) -> None:
    """A meminfo without MemAvailable, a stalled clock or an odd stat line give None."""
    proc = _proc_tree(tmp_path, busy=1, idle=1)
    (tmp_path / "meminfo").write_text("MemTotal: 1000 kB\n\nMemFree: 5 kB\n")
    (tmp_path / "stat").write_text("intr 1 2 3\n")
    wall = FakeClock(5.0)
    sampler = SystemSampler(use_psutil=False, proc=proc, clock=wall)
    figures = sampler.read()
    assert figures["memory_percent"] is None
    assert figures["cpu_percent"] is None
    assert figures["process_cpu_percent"] is None  # no wall time passed


def test_system_collector_with_nothing_readable(registry: PerfRegistry, tmp_path: Any) -> None:
    """Gauges whose figure is unavailable are exported without samples, not as zero."""
    sampler = SystemSampler(use_psutil=False, proc=str(tmp_path), disk_path=str(tmp_path / "x"))
    collector = SystemCollector(registry, sampler)
    registry.register(collector)
    assert sample(registry, "system_process_open_fds") is None
    assert sample(registry, "system_disk_ratio", {"path": str(tmp_path / "x")}) is None
    assert next(f.name for f in collector.describe()) == "system_cpu_ratio"


@pytest.mark.anyio
@pytest.mark.service("redis")
async def test_summary_shows_a_redis_tier_from_the_real_redis(
    registry: PerfRegistry, redis_url: str
) -> None:
    """A tiered cache on the real Redis: its cache row carries what Redis answered.

    Instance ``a`` loads one key (Redis miss), ``b`` reads it from Redis (hit) and misses another
    (miss): Redis answered 1 of b's 2 local misses. A cache without a tier has ``redis: None``.
    """
    namespace = f"t-{uuid.uuid4().hex[:12]}"
    client = aioredis.Redis.from_url(redis_url)
    plain: LRUCache[str, int] = LRUCache(10, name="plain", registry=registry)
    plain["x"] = 1
    tiers = [
        TieredCache(
            TTLCache(100, 60, name=name, registry=registry),
            client,
            namespace=namespace,
            ttl=60,
            timeout=5,  # a healthy command is never a timeout, however loaded the machine
        )
        for name in ("a", "b")
    ]
    a, b = tiers

    async def load() -> int:
        return 7

    try:
        assert await a.get_or_load("k", load) == 7
        assert await b.get_or_load("k", load) == 7
        assert await b.get_or_load("other", load) == 7
        caches = {c["cache"]: c for c in registry.summary()["cache"]["caches"]}
    finally:
        await client.delete(f"{namespace}:k", f"{namespace}:other")
        for t in tiers:
            await t.aclose()
        await client.aclose()
    assert caches["plain"]["redis"] is None
    redis_a, redis_b = caches["a"]["redis"], caches["b"]["redis"]
    assert redis_a is not None
    assert redis_b is not None
    assert redis_a["hits"] == 0
    assert redis_a["misses"] == 1
    assert (redis_b["hits"], redis_b["misses"], redis_b["errors"]) == (1, 1, 0)
    assert redis_b["hit_ratio"] == 0.5
    assert redis_b["fallbacks"] == 0
    assert redis_b["circuit_open"] is False
    assert redis_b["get_p95"] is not None
    assert redis_b["get_p95"] > 0


def test_window_reads_the_last_n_seconds(registry: PerfRegistry) -> None:
    """build(window=N) reads from the newest baseline at least N seconds old, whatever the
    monitor's window; the summary's window says which time it covered."""
    clock = FakeClock(registry.started_at)
    summarizer = Summarizer(registry, clock=clock)
    hits = registry.counter("cache_requests_total").labels("c", "hit")
    for _ in range(20):  # one hit per second, a build every second (every other one is kept)
        clock.now += 1
        hits.inc()
        summarizer.build(advance=True)
    clock.now += 1
    summary = summarizer.build(window=5)
    assert summary["window"]["seconds"] == 5
    assert summary["cache"]["caches"][0]["window_requests"] == 4  # the hits at 17-20 s
    # Baselines are 2 s apart: a 6 s window starts at the newest one at least 6 s old.
    assert summarizer.build(window=6)["window"]["seconds"] == 7
    # Shorter than the time since the newest baseline: that baseline (20 s, 1 s ago).
    assert summarizer.build(window=0.5)["window"]["seconds"] == 1
    # The default read stays on the monitor's window (the last advance, 1 s ago).
    assert summarizer.build()["window"]["seconds"] == 1
    # Longer than the registry has lived: everything since the start, honestly labelled.
    whole = summarizer.build(window=MAX_WINDOW * 10)
    assert whole["window"]["seconds"] == 21
    assert whole["cache"]["caches"][0]["window_requests"] == 20


def test_window_baselines_are_bounded(registry: PerfRegistry) -> None:
    """Baselines cover the longest window asked for lately, at most ~17 of them whatever the
    window (spaced by BASELINE_SPACING or 1/BASELINE_SHARE of it); once the long window is no
    longer asked for, they shrink back to what the shorter one needs."""
    clock = FakeClock(registry.started_at)
    summarizer = Summarizer(registry, clock=clock)
    limit = BASELINE_SHARE + 2
    for _ in range(int(MAX_WINDOW) * 3):  # 450 s, a build every 0.5 s, no window asked
        clock.now += 0.5
        summarizer.build()
    kept = summarizer._baselines
    assert len(kept) <= KEPT_WINDOW / BASELINE_SPACING + 2
    assert kept[0].at <= clock.now - KEPT_WINDOW < kept[1].at + BASELINE_SPACING
    # A longer window than was kept reads from the oldest baseline and says how long it covers.
    assert summarizer.build(window=MAX_WINDOW)["window"]["seconds"] < 40
    for _ in range(int(MAX_WINDOW) * 3):
        clock.now += 0.5
        summarizer.build(window=MAX_WINDOW)
    assert len(kept) <= limit
    seconds = summarizer.build(window=MAX_WINDOW)["window"]["seconds"]
    assert MAX_WINDOW <= seconds <= MAX_WINDOW * (1 + 1 / BASELINE_SHARE)
    for _ in range(int(MAX_WINDOW) * 3):  # the long window lapses; 30 s is asked for
        clock.now += 0.5
        summarizer.build(window=30)
    assert len(kept) <= KEPT_WINDOW / BASELINE_SPACING + 2
    assert 30 <= summarizer.build(window=30)["window"]["seconds"] <= 30 + BASELINE_SPACING


def test_registry_summary_takes_the_window(registry: PerfRegistry) -> None:
    """registry.summary(window=N) is the same read as Summarizer.build(window=N)."""
    assert registry.summary(window=30)["window"]["start"] == round(registry.started_at, 3)


@pytest.mark.parametrize("window", [0, -1, float("nan"), float("inf"), "30"])
def test_bad_window_is_refused(registry: PerfRegistry, window: Any) -> None:
    """A window that is not a positive number of seconds is a ValueError naming it."""
    with pytest.raises(ValueError, match="window must be a number of seconds > 0"):
        Summarizer.of(registry).build(window=window)

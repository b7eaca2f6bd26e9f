"""``registry.summary()``: every component's key figures in one JSON-able dict.

The summary is built from the registry's own samples, looked up by catalogue name, so it shows
whatever subset of the integrations is installed without importing any of them. Rates, error rates
and percentiles are computed over a *window*: since the previous monitor snapshot when a
:class:`~asgi_perf.operations.Monitor` runs, since the registry was created otherwise. Percentiles
are estimated from histogram bucket deltas with PromQL's interpolation (``_histogram.quantile``).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, cast

from .._histogram import quantile
from ..registry import SLOW_QUERIES, PerfRegistry
from ._keys import ALERTS, SUMMARIZER, TIMINGS
from ._schema import (
    AlertsSection,
    CacheRow,
    CacheSection,
    DbSection,
    EngineRow,
    HttpSection,
    InstrumentationSection,
    RedisTierRow,
    RouteRow,
    SocketIOSection,
    Summary,
    SystemFigures,
    TimersSection,
    TimerStats,
)
from ._system import SystemSampler, system_collector_skipped

#: A window needs this many requests before its error rate or hit ratio feeds an alert.
MIN_WINDOW_COUNT = 10
#: How many recent slow queries the summary lists.
SLOW_QUERY_LIMIT = 20

Labels = dict[str, str]


def _clean(value: float | None, digits: int = 6) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, digits)


class _SampledHistogram:
    """A histogram aggregated over some label combinations: cumulative buckets, sum, count."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets: dict[float, float] = {}
        self.sum = 0.0
        self.count = 0.0

    def minus(self, old: _SampledHistogram | None) -> _SampledHistogram:
        """The observations since ``old`` (all of them if ``old`` is missing or was reset)."""
        if old is None or old.count > self.count:
            return self
        out = _SampledHistogram()
        out.sum = self.sum - old.sum
        out.count = self.count - old.count
        out.buckets = {le: n - old.buckets.get(le, 0.0) for le, n in self.buckets.items()}
        return out

    def q(self, q: float) -> float | None:
        if self.count <= 0:
            return None
        return _clean(quantile(q, sorted(self.buckets.items())))

    def avg(self) -> float | None:
        return _clean(self.sum / self.count) if self.count > 0 else None


class Samples:
    """The registry's current samples, indexed by unprefixed sample name.

    The ``system_*`` collector is skipped: the summary reads its own sampler, and running the
    collector here would shorten the CPU window of the next Prometheus scrape.
    """

    def __init__(self, registry: PerfRegistry) -> None:
        prefix = f"{registry.namespace}_" if registry.namespace else ""
        self.by_name: dict[str, list[tuple[Labels, float]]] = {}
        with system_collector_skipped():
            for family in registry.prometheus.collect():
                for s in family.samples:
                    if not s.name.startswith(prefix):
                        continue
                    name = s.name[len(prefix) :]
                    self.by_name.setdefault(name, []).append((s.labels, s.value))

    def has(self, name: str) -> bool:
        return name in self.by_name or f"{name}_count" in self.by_name

    def values(self, name: str) -> list[tuple[Labels, float]]:
        return self.by_name.get(name, [])

    def sum_by(self, name: str, *keys: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for labels, value in self.values(name):
            key = tuple(labels.get(k, "") for k in keys)
            out[key] = out.get(key, 0.0) + value
        return out

    def total_by(self, name: str, key: str) -> dict[str, float]:
        """``name`` summed by one label, keyed by that label's value."""
        return {k: v for (k,), v in self.sum_by(name, key).items()}

    def hist_by(
        self, name: str, key: Callable[[Labels], tuple[str, ...] | None]
    ) -> dict[tuple[str, ...], _SampledHistogram]:
        """Histograms of ``name`` merged by ``key(labels)`` (``None`` skips the series)."""
        out: dict[tuple[str, ...], _SampledHistogram] = {}
        for suffix in ("_bucket", "_sum", "_count"):
            for labels, value in self.values(name + suffix):
                k = key(labels)
                if k is None:
                    continue
                hist = out.get(k)
                if hist is None:
                    hist = out[k] = _SampledHistogram()
                if suffix == "_bucket":
                    le = float(labels["le"])
                    hist.buckets[le] = hist.buckets.get(le, 0.0) + value
                elif suffix == "_sum":
                    hist.sum += value
                else:
                    hist.count += value
        return out


class _Window:
    """Cumulative figures at the start of the current window, to subtract from the current ones."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.hists: dict[str, _SampledHistogram] = {}
        self.counters: dict[str, float] = {}


class Summarizer:
    """Builds summaries for one registry and keeps the window baseline between them.

    One per registry (``Summarizer.of(registry)``). ``build(advance=True)`` (what the monitor calls)
    also starts a new window; ``build()`` reads without moving it, so a dashboard polling the
    summary never shortens the monitor's window. The CPU figures are rates too, so the two kinds
    of build read separate samplers: ``sampler`` for advancing builds, a copy of it for the others.
    """

    def __init__(
        self,
        registry: PerfRegistry,
        *,
        clock: Callable[[], float] = time.time,
        sampler: SystemSampler | None = None,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.sampler = sampler or SystemSampler()
        # A copy keeps the sampler's settings but holds its own previous CPU reading.
        self._read_sampler = copy.copy(self.sampler)
        self._window = _Window(registry.started_at)
        self._lock = threading.Lock()

    @classmethod
    def of(cls, registry: PerfRegistry) -> Summarizer:
        return registry.component(SUMMARIZER, lambda: cls(registry))

    def build(self, *, advance: bool = False) -> Summary:
        with self._lock:
            now = self.clock()
            base = self._window
            fresh = _Window(now)
            builder = _Builder(self.registry, Samples(self.registry), base, fresh, now)
            summary = builder.build((self.sampler if advance else self._read_sampler).read)
            if advance:
                self._window = fresh
            return summary


class _Builder:
    def __init__(
        self, registry: PerfRegistry, samples: Samples, base: _Window, fresh: _Window, now: float
    ) -> None:
        self.registry = registry
        self.s = samples
        self.base = base
        self.fresh = fresh
        self.now = now
        self.seconds = max(now - base.at, 1e-9)

    # -- window helpers --------------------------------------------------------------------------
    def window_hist(self, key: str, hist: _SampledHistogram) -> _SampledHistogram:
        self.fresh.hists[key] = hist
        return hist.minus(self.base.hists.get(key))

    def window_count(self, key: str, value: float) -> float:
        self.fresh.counters[key] = value
        old = self.base.counters.get(key)
        return value if old is None or old > value else value - old

    def rate(self, delta: float) -> float:
        return round(delta / self.seconds, 4)

    # -- sections --------------------------------------------------------------------------------
    def build(self, read_system: Callable[[], SystemFigures]) -> Summary:
        """Every section, one builder per feature; the system figures are read last."""
        reg = self.registry
        http, db, cache = self.http(), self.db(), self.cache()
        socketio, timers, alerts = self.socketio(), self.timers(), self.alerts()
        instrumentation: InstrumentationSection = {
            "errors": self.s.total_by("asgi_perf_instrumentation_errors_total", "component"),
            "series_overflow": self.s.total_by("asgi_perf_series_overflow_total", "metric"),
        }
        return {
            "generated_at": round(self.now, 3),
            "started_at": round(reg.started_at, 3),
            "uptime_seconds": round(self.now - reg.started_at, 3),
            "namespace": reg.namespace,
            "window": {
                "start": round(self.base.at, 3),
                "end": round(self.now, 3),
                "seconds": round(self.seconds, 3),
            },
            "http": http,
            "db": db,
            "cache": cache,
            "socketio": socketio,
            "timers": timers,
            "alerts": alerts,
            "instrumentation": instrumentation,
            "system": read_system(),
        }

    def http(self) -> HttpSection:
        hists = self.s.hist_by(
            "http_request_duration_seconds", lambda lb: (lb["method"], lb["route"], lb["status"])
        )
        per_route: dict[tuple[str, str], dict[str, Any]] = {}
        for (method, route, status), hist in hists.items():
            row = per_route.setdefault(
                (method, route), {"all": _SampledHistogram(), "w": _SampledHistogram(), "err": 0.0}
            )
            win = self.window_hist(f"http|{method}|{route}|{status}", hist)
            row["total"] = row.get("total", 0.0) + hist.count
            errors = status.startswith("5")
            row["errors"] = row.get("errors", 0.0) + (hist.count if errors else 0.0)
            row["w_err"] = row.get("w_err", 0.0) + (win.count if errors else 0.0)
            _merge(row["w"], win)
        routes: list[RouteRow] = []
        totals = {"requests": 0.0, "errors": 0.0, "w_requests": 0.0, "w_errors": 0.0}
        overall = _SampledHistogram()
        for (method, route), row in per_route.items():
            win = row["w"]
            _merge(overall, win)
            totals["requests"] += row["total"]
            totals["errors"] += row["errors"]
            totals["w_requests"] += win.count
            totals["w_errors"] += row["w_err"]
            routes.append(
                {
                    "method": method,
                    "route": route,
                    "requests": int(row["total"]),
                    "errors": int(row["errors"]),
                    "rate": self.rate(win.count),
                    "error_rate": _ratio(row["w_err"], win.count),
                    "avg": win.avg(),
                    "p50": win.q(0.5),
                    "p95": win.q(0.95),
                    "p99": win.q(0.99),
                    "window_requests": int(win.count),
                }
            )
        routes.sort(key=lambda r: (-r["requests"], r["route"], r["method"]))
        in_progress = {
            k[0]: int(v)
            for k, v in self.s.sum_by("http_requests_in_progress", "method").items()
            if v
        }
        return {
            "requests": int(totals["requests"]),
            "errors": int(totals["errors"]),
            "rate": self.rate(totals["w_requests"]),
            "error_rate": _ratio(totals["w_errors"], totals["w_requests"]),
            "window_requests": int(totals["w_requests"]),
            "avg": overall.avg(),
            "p95": overall.q(0.95),
            "in_progress": sum(in_progress.values()),
            "in_progress_by_method": in_progress,
            "exceptions": {
                k[0]: int(v) for k, v in self.s.sum_by("http_exceptions_total", "exception").items()
            },
            "routes": routes,
        }

    def db(self) -> DbSection:
        hists = self.s.hist_by(
            "db_query_duration_seconds", lambda lb: (lb["engine"], lb.get("outcome", ""))
        )
        engines: dict[str, dict[str, Any]] = {}
        # engine -> (lifetime, window) durations, merged over operations and outcomes
        durations: dict[str, tuple[_SampledHistogram, _SampledHistogram]] = {}
        for (engine, outcome), hist in hists.items():
            row = engines.setdefault(engine, _engine_row(engine))
            win = self.window_hist(f"db|{engine}|{outcome}", hist)
            row["queries"] += int(hist.count)
            if outcome == "error":
                row["errors"] += int(hist.count)
            elif outcome == "cancelled":
                row["cancelled"] += int(hist.count)
            all_, window = durations.setdefault(engine, (_SampledHistogram(), _SampledHistogram()))
            _merge(all_, hist)
            _merge(window, win)
        for (engine,), value in self.s.sum_by("db_slow_queries_total", "engine").items():
            row = engines.setdefault(engine, _engine_row(engine))
            row["slow"] = int(value)
            row["slow_per_minute"] = round(
                60.0 * self.window_count(f"db_slow|{engine}", value) / self.seconds, 4
            )
        for name, key in (
            ("db_pool_size", "size"),
            ("db_pool_checked_out", "checked_out"),
            ("db_pool_checked_in", "checked_in"),
            ("db_pool_overflow", "overflow"),
            ("db_pool_checkout_timeouts_total", "checkout_timeouts"),
        ):
            for (engine,), value in self.s.sum_by(name, "engine").items():
                engines.setdefault(engine, _engine_row(engine))["pool"][key] = int(value)
        per_request = self.s.hist_by("db_queries_per_request", lambda lb: (lb["engine"],))
        for (engine,), hist in per_request.items():
            engines.setdefault(engine, _engine_row(engine))["queries_per_request"] = hist.avg()
        checkout = self.s.hist_by("db_pool_checkout_seconds", lambda lb: (lb["engine"],))
        for (engine,), hist in checkout.items():
            row = engines.setdefault(engine, _engine_row(engine))
            row["pool"]["checkout_p95"] = hist.q(0.95)
        slow_log = self.registry.find_component(SLOW_QUERIES)
        recent: list[dict[str, Any]] = []
        if slow_log is not None:
            try:
                recent = list(slow_log.recent(limit=SLOW_QUERY_LIMIT))
            except Exception as exc:  # noqa: BLE001 - another component's bug must not break this
                self.registry.report_error("summary", exc)
        out: list[EngineRow] = []
        for engine, row in sorted(engines.items()):
            all_, win = durations.get(engine, (_SampledHistogram(), _SampledHistogram()))
            row["rate"] = self.rate(win.count)
            row["avg"] = all_.avg()
            row["p95"] = win.q(0.95)
            row["p99"] = win.q(0.99)
            row["window_queries"] = int(win.count)
            row["recent_slow"] = [q for q in recent if q.get("engine") == engine]
            out.append(cast("EngineRow", row))
        return {"engines": out, "slow_queries": recent}

    def cache(self) -> CacheSection:
        requests = self.s.sum_by("cache_requests_total", "cache", "result")
        caches: dict[str, CacheRow] = {}

        def row(name: str) -> CacheRow:
            return caches.setdefault(
                name,
                {
                    "cache": name,
                    "hits": 0,
                    "misses": 0,
                    "hit_ratio": None,
                    "window_hit_ratio": None,
                    "window_requests": 0,
                    "entries": None,
                    "maxsize": None,
                    "evictions": {},
                    "load_p95": None,
                    "load_errors": 0,
                    "coalesced": 0,
                    "redis": None,
                },
            )

        window: dict[str, dict[str, float]] = {}
        for (name, result), value in requests.items():
            r = row(name)
            if result == "hit":
                r["hits"] += int(value)
            elif result == "miss":
                r["misses"] += int(value)
            w = window.setdefault(name, {"hit": 0.0, "miss": 0.0})
            w[result] = self.window_count(f"cache|{name}|{result}", value)
        for name, w in window.items():
            r = row(name)
            r["hit_ratio"] = _ratio(r["hits"], r["hits"] + r["misses"])
            r["window_requests"] = int(w.get("hit", 0.0) + w.get("miss", 0.0))
            r["window_hit_ratio"] = _ratio(w.get("hit", 0.0), r["window_requests"])
        for (name, reason), value in self.s.sum_by(
            "cache_evictions_total", "cache", "reason"
        ).items():
            row(name)["evictions"][reason] = int(value)
        figures: tuple[tuple[str, _CacheFigure], ...] = (
            ("cache_entries", "entries"),
            ("cache_maxsize", "maxsize"),
            ("cache_load_errors_total", "load_errors"),
            ("cache_coalesced_total", "coalesced"),
        )
        for metric, key in figures:
            for (name,), value in self.s.sum_by(metric, "cache").items():
                row(name)[key] = int(value)
        loads = self.s.hist_by("cache_load_duration_seconds", lambda lb: (lb["cache"],))
        for (name,), hist in loads.items():
            row(name)["load_p95"] = hist.q(0.95)
        for name, tier in self.redis_tiers().items():
            row(name)["redis"] = tier
        return {"caches": [caches[name] for name in sorted(caches)]}

    def redis_tiers(self) -> dict[str, RedisTierRow]:
        """Per cache with a Redis second tier: what Redis answered, errors, fallbacks, health."""
        tiers: dict[str, RedisTierRow] = {}

        def tier(name: str) -> RedisTierRow:
            return tiers.setdefault(
                name,
                {
                    "hits": 0,
                    "misses": 0,
                    "errors": 0,
                    "hit_ratio": None,
                    "fallbacks": 0,
                    "get_p95": None,
                    "subscribed": None,
                    "circuit_open": None,
                },
            )

        requests = self.s.sum_by("cache_tier_requests_total", "cache", "tier", "result")
        for (name, where, result), value in requests.items():
            key = _TIER_RESULTS.get(result)
            if where == "redis" and key is not None:
                tier(name)[key] = int(value)
        for (name,), value in self.s.sum_by("cache_redis_fallbacks_total", "cache").items():
            tier(name)["fallbacks"] = int(value)
        health: tuple[tuple[str, Literal["subscribed", "circuit_open"]], ...] = (
            ("cache_redis_subscribed", "subscribed"),
            ("cache_redis_circuit_open", "circuit_open"),
        )
        for metric, flag in health:
            for (name,), value in self.s.sum_by(metric, "cache").items():
                tier(name)[flag] = bool(value)
        gets = self.s.hist_by(
            "cache_redis_duration_seconds",
            lambda lb: (lb["cache"],) if lb.get("operation") == "get" else None,
        )
        for (name,), hist in gets.items():
            tier(name)["get_p95"] = hist.q(0.95)
        for t in tiers.values():
            t["hit_ratio"] = _ratio(t["hits"], t["hits"] + t["misses"])
        return tiers

    def socketio(self) -> SocketIOSection:
        s = self.s
        connections = s.sum_by("socketio_connections", "namespace")
        received = sum(v for _, v in s.values("socketio_events_received_total"))
        emitted = sum(v for _, v in s.values("socketio_events_emitted_total"))
        batches = sum(v for _, v in s.values("socketio_batches_total"))
        items = s.hist_by("socketio_batch_items", lambda lb: ())
        wait = s.hist_by("socketio_batch_wait_seconds", lambda lb: ())
        wait_w = self.window_hist("sio_wait", wait[()]) if () in wait else _SampledHistogram()
        handler = s.hist_by("socketio_handler_duration_seconds", lambda lb: ())

        def one(name: str) -> int | None:
            values = s.values(name)
            return int(sum(v for _, v in values)) if values else None

        return {
            "enabled": any(
                s.has(name)
                for name in (
                    "socketio_connections",
                    "socketio_events_received_total",
                    "socketio_batches_total",
                )
            ),
            "connections": int(sum(connections.values())),
            "connections_by_namespace": {k[0]: int(v) for k, v in connections.items()},
            "connects": {
                k[0]: int(v) for k, v in s.sum_by("socketio_connects_total", "outcome").items()
            },
            "disconnects": {
                k[0]: int(v) for k, v in s.sum_by("socketio_disconnects_total", "reason").items()
            },
            "events_received": int(received),
            "events_emitted": int(emitted),
            "events_received_rate": self.rate(self.window_count("sio_in", received)),
            "events_emitted_rate": self.rate(self.window_count("sio_out", emitted)),
            "handler_p95": handler[()].q(0.95) if () in handler else None,
            "batches": int(batches),
            "batch_items_avg": items[()].avg() if () in items else None,
            "batch_wait_p95": wait_w.q(0.95),
            "batch_pending": one("socketio_batch_pending"),
            "batch_dropped": {
                k[0]: int(v) for k, v in s.sum_by("socketio_batch_dropped_total", "reason").items()
            },
            "queue_depth_max": one("socketio_queue_depth_max"),
            "queue_depth_sum": one("socketio_queued_packets"),
        }

    def timers(self) -> TimersSection:
        timings = self.registry.find_component(TIMINGS)
        if timings is None:
            return {"timers": {}, "counters": {}}
        return {
            "timers": {name: _clean_stats(timings.stats(name)) for name in timings.names()},
            "counters": timings.counters(),
        }

    def alerts(self) -> AlertsSection:
        manager = self.registry.find_component(ALERTS)
        if manager is None:
            return {"enabled": False, "firing": [], "pending": []}
        states = manager.states()
        return {
            "enabled": True,
            "firing": [a for a in states if a["state"] == "firing"],
            "pending": [a for a in states if a["state"] == "pending"],
        }


def _merge(into: _SampledHistogram, other: _SampledHistogram) -> None:
    into.count += other.count
    into.sum += other.sum
    for le, n in other.buckets.items():
        into.buckets[le] = into.buckets.get(le, 0.0) + n


_CacheFigure = Literal["entries", "maxsize", "load_errors", "coalesced"]
_TIER_RESULTS: dict[str, Literal["hits", "misses", "errors"]] = {
    "hit": "hits",
    "miss": "misses",
    "error": "errors",
}


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole > 0 else None


def _engine_row(engine: str) -> dict[str, Any]:
    return {
        "engine": engine,
        "queries": 0,
        "errors": 0,
        "cancelled": 0,
        "slow": 0,
        "slow_per_minute": 0.0,
        "queries_per_request": None,
        "pool": {},
    }


def _clean_stats(stats: TimerStats) -> TimerStats:
    return cast(
        "TimerStats", {k: _clean(v) if isinstance(v, float) else v for k, v in stats.items()}
    )


def build_summary(registry: PerfRegistry) -> Summary:
    """The registry's summary now (the window is not advanced; see :class:`Summarizer`)."""
    return Summarizer.of(registry).build()


def _worst(
    values: Iterable[float | None], pick: Callable[[Iterable[float]], float]
) -> float | None:
    present = [v for v in values if v is not None]
    return pick(present) if present else None


def alert_figures(summary: Summary) -> dict[str, float | None]:
    """The flat figures alert rules compare against thresholds (worst value across series).

    Ratios (error rate, hit ratio) only count windows with at least :data:`MIN_WINDOW_COUNT`
    requests, so one failed request out of two does not page anyone.
    """
    http = summary["http"]
    system = summary["system"]
    sio = summary["socketio"]
    engines = summary["db"]["engines"]
    caches = summary["cache"]["caches"]
    busy_routes = [r for r in http["routes"] if r["window_requests"] >= MIN_WINDOW_COUNT]
    return {
        "system.cpu_percent": system["cpu_percent"],
        "system.memory_percent": system["memory_percent"],
        "system.disk_percent": system["disk_percent"],
        "system.process_cpu_percent": system["process_cpu_percent"],
        "http.error_rate": http["error_rate"]
        if http["window_requests"] >= MIN_WINDOW_COUNT
        else None,
        "http.p95_seconds": _worst((r["p95"] for r in busy_routes), max),
        "http.in_progress": float(http["in_progress"]),
        "db.p95_seconds": _worst((e["p95"] for e in engines), max),
        "db.slow_per_minute": float(sum(e["slow_per_minute"] for e in engines)),
        "db.pool_checkout_timeouts": float(
            sum(e["pool"].get("checkout_timeouts", 0) for e in engines)
        ),
        "cache.hit_ratio": _worst(
            (c["window_hit_ratio"] for c in caches if c["window_requests"] >= MIN_WINDOW_COUNT),
            min,
        ),
        "socketio.queue_depth": _as_float(sio["queue_depth_max"]),
        "socketio.batch_pending": _as_float(sio["batch_pending"]),
        "socketio.batch_wait_p95_seconds": sio["batch_wait_p95"],
        "instrumentation.errors": float(sum(summary["instrumentation"]["errors"].values())),
    }


def _as_float(value: int | None) -> float | None:
    return float(value) if value is not None else None


__all__ = [
    "MIN_WINDOW_COUNT",
    "SLOW_QUERY_LIMIT",
    "Samples",
    "Summarizer",
    "alert_figures",
    "build_summary",
]

"""The summary's sections, one builder per feature: HTTP, database, caches (with their Redis
tier), Socket.IO, timers and alerts.

Each reads the registry's samples by catalogue name through a :class:`~._samples.Reading`, so a
section shows whatever its integration exported, and never imports the integration itself.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from ..registry import SLOW_QUERIES
from ._keys import ALERTS, TIMINGS
from ._samples import Reading, SampledHistogram, clean, merge, ratio
from ._schema import (
    AlertsSection,
    CacheRow,
    CacheSection,
    DbSection,
    EngineRow,
    HttpSection,
    RedisTierRow,
    RouteRow,
    SlowQueryGroup,
    SocketIOSection,
    TimersSection,
    TimerStats,
)

#: How many recent slow queries, and how many slow statement shapes, the summary lists.
SLOW_QUERY_LIMIT = 20


def http(rd: Reading) -> HttpSection:
    hists = rd.s.hist_by(
        "http_request_duration_seconds", lambda lb: (lb["method"], lb["route"], lb["status"])
    )
    per_route: dict[tuple[str, str], dict[str, Any]] = {}
    for (method, route, status), hist in hists.items():
        row = per_route.setdefault(
            (method, route), {"all": SampledHistogram(), "w": SampledHistogram(), "err": 0.0}
        )
        win = rd.window_hist(f"http|{method}|{route}|{status}", hist)
        row["total"] = row.get("total", 0.0) + hist.count
        errors = status.startswith("5")
        row["errors"] = row.get("errors", 0.0) + (hist.count if errors else 0.0)
        row["w_err"] = row.get("w_err", 0.0) + (win.count if errors else 0.0)
        merge(row["w"], win)
    routes: list[RouteRow] = []
    totals = {"requests": 0.0, "errors": 0.0, "w_requests": 0.0, "w_errors": 0.0}
    overall = SampledHistogram()
    for (method, route), row in per_route.items():
        win = row["w"]
        merge(overall, win)
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
                "rate": rd.rate(win.count),
                "error_rate": ratio(row["w_err"], win.count),
                "avg": win.avg(),
                "p50": win.q(0.5),
                "p95": win.q(0.95),
                "p99": win.q(0.99),
                "window_requests": int(win.count),
            }
        )
    routes.sort(key=lambda r: (-r["requests"], r["route"], r["method"]))
    in_progress = {
        k[0]: int(v) for k, v in rd.s.sum_by("http_requests_in_progress", "method").items() if v
    }
    return {
        "requests": int(totals["requests"]),
        "errors": int(totals["errors"]),
        "rate": rd.rate(totals["w_requests"]),
        "error_rate": ratio(totals["w_errors"], totals["w_requests"]),
        "window_requests": int(totals["w_requests"]),
        "avg": overall.avg(),
        "p95": overall.q(0.95),
        "in_progress": sum(in_progress.values()),
        "in_progress_by_method": in_progress,
        "exceptions": {
            k[0]: int(v) for k, v in rd.s.sum_by("http_exceptions_total", "exception").items()
        },
        "routes": routes,
    }


def db(rd: Reading) -> DbSection:
    hists = rd.s.hist_by(
        "db_query_duration_seconds", lambda lb: (lb["engine"], lb.get("outcome", ""))
    )
    engines: dict[str, dict[str, Any]] = {}
    # engine -> (lifetime, window) durations, merged over operations and outcomes
    durations: dict[str, tuple[SampledHistogram, SampledHistogram]] = {}
    for (engine, outcome), hist in hists.items():
        row = engines.setdefault(engine, _engine_row(engine))
        win = rd.window_hist(f"db|{engine}|{outcome}", hist)
        row["queries"] += int(hist.count)
        if outcome == "error":
            row["errors"] += int(hist.count)
        elif outcome == "cancelled":
            row["cancelled"] += int(hist.count)
        all_, window = durations.setdefault(engine, (SampledHistogram(), SampledHistogram()))
        merge(all_, hist)
        merge(window, win)
    for (engine,), value in rd.s.sum_by("db_slow_queries_total", "engine").items():
        row = engines.setdefault(engine, _engine_row(engine))
        row["slow"] = int(value)
        row["slow_per_minute"] = round(
            60.0 * rd.window_count(f"db_slow|{engine}", value) / rd.seconds, 4
        )
    for name, key in (
        ("db_pool_size", "size"),
        ("db_pool_checked_out", "checked_out"),
        ("db_pool_checked_in", "checked_in"),
        ("db_pool_overflow", "overflow"),
        ("db_pool_checkout_timeouts_total", "checkout_timeouts"),
    ):
        for (engine,), value in rd.s.sum_by(name, "engine").items():
            engines.setdefault(engine, _engine_row(engine))["pool"][key] = int(value)
    per_request = rd.s.hist_by("db_queries_per_request", lambda lb: (lb["engine"],))
    for (engine,), hist in per_request.items():
        engines.setdefault(engine, _engine_row(engine))["queries_per_request"] = hist.avg()
    checkout = rd.s.hist_by("db_pool_checkout_seconds", lambda lb: (lb["engine"],))
    for (engine,), hist in checkout.items():
        row = engines.setdefault(engine, _engine_row(engine))
        row["pool"]["checkout_p95"] = hist.q(0.95)
    slow_log = rd.registry.find_component(SLOW_QUERIES)
    recent: list[dict[str, Any]] = []
    groups: list[SlowQueryGroup] = []
    if slow_log is not None:
        try:
            recent = list(slow_log.recent(limit=SLOW_QUERY_LIMIT))
            groups = [_slow_group(g) for g in slow_log.groups(limit=SLOW_QUERY_LIMIT)]
        except Exception as exc:  # noqa: BLE001 - another component's bug must not break this
            rd.registry.report_error("summary", exc)
    out: list[EngineRow] = []
    for engine, row in sorted(engines.items()):
        all_, win = durations.get(engine, (SampledHistogram(), SampledHistogram()))
        row["rate"] = rd.rate(win.count)
        row["avg"] = all_.avg()
        row["p95"] = win.q(0.95)
        row["p99"] = win.q(0.99)
        row["window_queries"] = int(win.count)
        row["recent_slow"] = [q for q in recent if q.get("engine") == engine]
        out.append(cast("EngineRow", row))
    return {"engines": out, "slow_queries": recent, "slow_query_groups": groups}


def _slow_group(g: dict[str, Any]) -> SlowQueryGroup:
    return {
        "engine": str(g["engine"]),
        "operation": str(g["operation"]),
        "fingerprint": str(g["fingerprint"]),
        "sql": str(g["sql"]),
        "count": int(g["count"]),
        "p95": clean(g["p95"]),
        "max": clean(g["max"]),
        "last_seen": round(float(g["last_seen"]), 3),
    }


def cache(rd: Reading) -> CacheSection:
    requests = rd.s.sum_by("cache_requests_total", "cache", "result")
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
        w[result] = rd.window_count(f"cache|{name}|{result}", value)
    for name, w in window.items():
        r = row(name)
        r["hit_ratio"] = ratio(r["hits"], r["hits"] + r["misses"])
        r["window_requests"] = int(w.get("hit", 0.0) + w.get("miss", 0.0))
        r["window_hit_ratio"] = ratio(w.get("hit", 0.0), r["window_requests"])
    for (name, reason), value in rd.s.sum_by("cache_evictions_total", "cache", "reason").items():
        row(name)["evictions"][reason] = int(value)
    figures: tuple[tuple[str, _CacheFigure], ...] = (
        ("cache_entries", "entries"),
        ("cache_maxsize", "maxsize"),
        ("cache_load_errors_total", "load_errors"),
        ("cache_coalesced_total", "coalesced"),
    )
    for metric, key in figures:
        for (name,), value in rd.s.sum_by(metric, "cache").items():
            row(name)[key] = int(value)
    loads = rd.s.hist_by("cache_load_duration_seconds", lambda lb: (lb["cache"],))
    for (name,), hist in loads.items():
        row(name)["load_p95"] = hist.q(0.95)
    for name, tier in redis_tiers(rd).items():
        row(name)["redis"] = tier
    return {"caches": [caches[name] for name in sorted(caches)]}


def redis_tiers(rd: Reading) -> dict[str, RedisTierRow]:
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

    requests = rd.s.sum_by("cache_tier_requests_total", "cache", "tier", "result")
    for (name, where, result), value in requests.items():
        key = _TIER_RESULTS.get(result)
        if where == "redis" and key is not None:
            tier(name)[key] = int(value)
    for (name,), value in rd.s.sum_by("cache_redis_fallbacks_total", "cache").items():
        tier(name)["fallbacks"] = int(value)
    health: tuple[tuple[str, Literal["subscribed", "circuit_open"]], ...] = (
        ("cache_redis_subscribed", "subscribed"),
        ("cache_redis_circuit_open", "circuit_open"),
    )
    for metric, flag in health:
        for (name,), value in rd.s.sum_by(metric, "cache").items():
            tier(name)[flag] = bool(value)
    gets = rd.s.hist_by(
        "cache_redis_duration_seconds",
        lambda lb: (lb["cache"],) if lb.get("operation") == "get" else None,
    )
    for (name,), hist in gets.items():
        tier(name)["get_p95"] = hist.q(0.95)
    for t in tiers.values():
        t["hit_ratio"] = ratio(t["hits"], t["hits"] + t["misses"])
    return tiers


def socketio(rd: Reading) -> SocketIOSection:
    s = rd.s
    connections = s.sum_by("socketio_connections", "namespace")
    received = sum(v for _, v in s.values("socketio_events_received_total"))
    emitted = sum(v for _, v in s.values("socketio_events_emitted_total"))
    batches = sum(v for _, v in s.values("socketio_batches_total"))
    items = s.hist_by("socketio_batch_items", lambda lb: ())
    wait = s.hist_by("socketio_batch_wait_seconds", lambda lb: ())
    wait_w = rd.window_hist("sio_wait", wait[()]) if () in wait else SampledHistogram()
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
        "events_received_rate": rd.rate(rd.window_count("sio_in", received)),
        "events_emitted_rate": rd.rate(rd.window_count("sio_out", emitted)),
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


def timers(rd: Reading) -> TimersSection:
    timings = rd.registry.find_component(TIMINGS)
    if timings is None:
        return {"timers": {}, "counters": {}}
    return {
        "timers": {name: _clean_stats(timings.stats(name)) for name in timings.names()},
        "counters": timings.counters(),
    }


def alerts(rd: Reading) -> AlertsSection:
    manager = rd.registry.find_component(ALERTS)
    if manager is None:
        return {"enabled": False, "firing": [], "pending": []}
    states = manager.states()
    return {
        "enabled": True,
        "firing": [a for a in states if a["state"] == "firing"],
        "pending": [a for a in states if a["state"] == "pending"],
    }


_CacheFigure = Literal["entries", "maxsize", "load_errors", "coalesced"]
_TIER_RESULTS: dict[str, Literal["hits", "misses", "errors"]] = {
    "hit": "hits",
    "miss": "misses",
    "error": "errors",
}


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
        "TimerStats", {k: clean(v) if isinstance(v, float) else v for k, v in stats.items()}
    )


__all__ = ["SLOW_QUERY_LIMIT", "alerts", "cache", "db", "http", "redis_tiers", "socketio", "timers"]

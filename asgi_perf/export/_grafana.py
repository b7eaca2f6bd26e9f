# ruff: noqa: E501 - PromQL expressions read best on one line
"""The importable Grafana dashboard for the metric catalogue (``asgi-perf grafana``)."""

from __future__ import annotations

from typing import Any

from ..catalogue import exposed_name

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
_WIDTH = 24


class _Q:
    """PromQL helpers: exposed names with the namespace and the dashboard's ``$job`` filter."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace

    def __call__(self, name: str, matchers: str = "") -> str:
        full = exposed_name(name, self.ns)
        extra = f", {matchers}" if matchers else ""
        return f'{full}{{job=~"$job"{extra}}}'


def _target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


def _panel(
    title: str, targets: list[dict[str, Any]], unit: str, kind: str = "timeseries", width: int = 12
) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "gridPos": {"w": width, "h": 4 if kind == "stat" else 8},
    }
    if kind == "stat":
        panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
    return panel


def _p95(q: _Q, metric: str, by: str) -> str:
    return quantile_expr(0.95, q(metric + "_bucket"), q(metric), by, "$__rate_interval")


def quantile_expr(quantile: float, buckets: str, native: str, by: str, window: str) -> str:
    """``histogram_quantile`` over the classic ``_bucket`` series, ``or`` over the native series
    where a Prometheus with native histograms on ingested them instead (one expression serves
    both ways of scraping)."""
    group = f"{by}, le" if by else "le"
    classic = f"histogram_quantile({quantile}, sum by ({group}) (rate({buckets}[{window}])))"
    if by:
        return (
            f"{classic} or histogram_quantile({quantile}, sum by ({by}) (rate({native}[{window}])))"
        )
    return f"{classic} or histogram_quantile({quantile}, sum(rate({native}[{window}])))"


def grafana_dashboard(namespace: str = "", title: str = "asgi-perf") -> dict[str, Any]:
    """The dashboard as a dict (``json.dumps`` it, then import it in Grafana)."""
    q = _Q(namespace)
    ri = "[$__rate_interval]"
    req = q("http_requests_total")
    five = q("http_requests_total", 'status=~"5.."')
    hits = q("cache_requests_total", 'result="hit"')
    rows: list[tuple[str, list[dict[str, Any]]]] = [
        (
            "Overview",
            [
                _panel(
                    "Requests/s", [_target(f"sum(rate({req}{ri}))", "req/s")], "reqps", "stat", 6
                ),
                _panel(
                    "5xx ratio",
                    [_target(f"sum(rate({five}{ri})) / sum(rate({req}{ri}))", "5xx")],
                    "percentunit",
                    "stat",
                    6,
                ),
                _panel(
                    "p95 latency",
                    [
                        _target(
                            quantile_expr(
                                0.95,
                                q("http_request_duration_seconds_bucket"),
                                q("http_request_duration_seconds"),
                                "",
                                "$__rate_interval",
                            ),
                            "p95",
                        )
                    ],
                    "s",
                    "stat",
                    6,
                ),
                _panel(
                    "In progress",
                    [_target(f"sum({q('http_requests_in_progress')})", "in progress")],
                    "short",
                    "stat",
                    6,
                ),
            ],
        ),
        (
            "HTTP",
            [
                _panel(
                    "Requests/s by route",
                    [_target(f"sum by (method, route) (rate({req}{ri}))", "{{method}} {{route}}")],
                    "reqps",
                ),
                _panel(
                    "p95 latency by route",
                    [_target(_p95(q, "http_request_duration_seconds", "route"), "{{route}}")],
                    "s",
                ),
                _panel(
                    "5xx ratio by route",
                    [
                        _target(
                            f"sum by (route) (rate({five}{ri})) / sum by (route) (rate({req}{ri}))",
                            "{{route}}",
                        )
                    ],
                    "percentunit",
                ),
                _panel(
                    "Time to first byte p95",
                    [_target(_p95(q, "http_request_ttfb_seconds", "route"), "{{route}}")],
                    "s",
                ),
            ],
        ),
        (
            "Database",
            [
                _panel(
                    "Query p95 by engine",
                    [_target(_p95(q, "db_query_duration_seconds", "engine"), "{{engine}}")],
                    "s",
                ),
                _panel(
                    "Queries/s by outcome",
                    [
                        _target(
                            f"sum by (engine, outcome) (rate({q('db_query_duration_seconds_count')}{ri}))",
                            "{{engine}} {{outcome}}",
                        )
                    ],
                    "ops",
                ),
                _panel(
                    "Slow queries per minute",
                    [
                        _target(
                            f"sum by (engine, operation) (rate({q('db_slow_queries_total')}{ri})) * 60",
                            "{{engine}} {{operation}}",
                        )
                    ],
                    "short",
                ),
                _panel(
                    "Connection pool",
                    [
                        _target(
                            f"sum by (engine) ({q('db_pool_checked_out')})",
                            "{{engine}} checked out",
                            "A",
                        ),
                        _target(f"sum by (engine) ({q('db_pool_size')})", "{{engine}} size", "B"),
                        _target(
                            f"sum by (engine) ({q('db_pool_overflow')})", "{{engine}} overflow", "C"
                        ),
                    ],
                    "short",
                ),
            ],
        ),
        (
            "Caches",
            [
                _panel(
                    "Hit ratio by cache",
                    [
                        _target(
                            f"sum by (cache) (rate({hits}{ri})) / sum by (cache) (rate({q('cache_requests_total')}{ri}))",
                            "{{cache}}",
                        )
                    ],
                    "percentunit",
                ),
                _panel(
                    "Evictions/s by reason",
                    [
                        _target(
                            f"sum by (cache, reason) (rate({q('cache_evictions_total')}{ri}))",
                            "{{cache}} {{reason}}",
                        )
                    ],
                    "ops",
                ),
                _panel(
                    "Entries",
                    [_target(f"sum by (cache) ({q('cache_entries')})", "{{cache}}")],
                    "short",
                ),
                _panel(
                    "Load p95",
                    [_target(_p95(q, "cache_load_duration_seconds", "cache"), "{{cache}}")],
                    "s",
                ),
            ],
        ),
        (
            "Socket.IO",
            [
                _panel(
                    "Connections",
                    [_target(f"sum by (namespace) ({q('socketio_connections')})", "{{namespace}}")],
                    "short",
                ),
                _panel(
                    "Events/s",
                    [
                        _target(
                            f"sum(rate({q('socketio_events_received_total')}{ri}))", "received", "A"
                        ),
                        _target(
                            f"sum(rate({q('socketio_events_emitted_total')}{ri}))", "emitted", "B"
                        ),
                    ],
                    "ops",
                ),
                _panel(
                    "Batch wait p95 (send delay)",
                    [
                        _target(
                            f"histogram_quantile(0.95, sum by (le) (rate({q('socketio_batch_wait_seconds_bucket')}{ri})))",
                            "p95",
                        )
                    ],
                    "s",
                ),
                _panel(
                    "Batcher backlog",
                    [
                        _target(f"sum({q('socketio_batch_pending')})", "pending", "A"),
                        _target(f"max({q('socketio_queue_depth_max')})", "max client queue", "B"),
                        _target(
                            f"sum(rate({q('socketio_batch_dropped_total')}{ri}))", "dropped/s", "C"
                        ),
                    ],
                    "short",
                ),
            ],
        ),
        (
            "System and asgi-perf",
            [
                _panel(
                    "CPU, memory, disk",
                    [
                        _target(f"max({q('system_cpu_ratio')})", "host CPU", "A"),
                        _target(f"max({q('system_memory_ratio')})", "memory", "B"),
                        _target(f"max by (path) ({q('system_disk_ratio')})", "disk {{path}}", "C"),
                        _target(f"sum({q('system_process_cpu_ratio')})", "process CPU", "D"),
                    ],
                    "percentunit",
                ),
                _panel(
                    "Process RSS",
                    [_target(f"sum({q('system_process_resident_bytes')})", "RSS")],
                    "bytes",
                ),
                _panel(
                    "Alerts firing",
                    [
                        _target(
                            f"sum by (rule, severity) ({q('asgi_perf_alerts_firing')}) > 0",
                            "{{rule}} ({{severity}})",
                        )
                    ],
                    "short",
                ),
                _panel(
                    "asgi-perf errors and overflow",
                    [
                        _target(
                            f"sum by (component) (increase({q('asgi_perf_instrumentation_errors_total')}{ri}))",
                            "errors {{component}}",
                            "A",
                        ),
                        _target(
                            f"sum by (metric) (increase({q('asgi_perf_series_overflow_total')}{ri}))",
                            "overflow {{metric}}",
                            "B",
                        ),
                    ],
                    "short",
                ),
            ],
        ),
    ]
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row_title, row_panels in rows:
        panels.append(
            {
                "type": "row",
                "title": row_title,
                "id": next_id,
                "collapsed": False,
                "panels": [],
                "gridPos": {"x": 0, "y": y, "w": _WIDTH, "h": 1},
            }
        )
        next_id += 1
        y += 1
        x = 0
        row_height = 0
        for panel in row_panels:
            grid = panel["gridPos"]
            if x + grid["w"] > _WIDTH:
                x, y = 0, y + row_height
                row_height = 0
            grid.update({"x": x, "y": y})
            panel["id"] = next_id
            next_id += 1
            x += grid["w"]
            row_height = max(row_height, grid["h"])
            panels.append(panel)
        y += row_height
    job_query = q.__call__("http_requests_total").split("{", 1)[0]
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "title": title,
        "uid": f"asgi-perf-{namespace}" if namespace else "asgi-perf",
        "tags": ["asgi-perf"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "job",
                    "label": "job",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": f"label_values({job_query}, job)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "current": {"text": "All", "value": "$__all"},
                }
            ]
        },
        "panels": panels,
    }


__all__ = ["grafana_dashboard"]

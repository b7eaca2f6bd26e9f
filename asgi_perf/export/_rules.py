"""Prometheus recording/alerting rules and a Grafana dashboard for the metric catalogue.

``asgi-perf rules`` and ``asgi-perf grafana`` print these. The thresholds match the in-process
alert defaults (:data:`asgi_perf.operations.DEFAULT_RULES`), so a team moving from the built-in
alerts to Prometheus keeps the same behaviour. Metric names follow ``namespace`` exactly as
``PerfRegistry(namespace=...)`` prefixes them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..catalogue import exposed_name
from ._grafana import grafana_dashboard, quantile_expr

DEFAULT_WINDOW = "5m"
_WINDOW = re.compile(r"^[1-9][0-9]*[smhd]$")
_NAMESPACE = re.compile(r"^([a-zA-Z_][a-zA-Z0-9_]*)?$")
ERR_WINDOW = "window must be a Prometheus duration like 5m, got {!r}"
ERR_NAMESPACE = "namespace must match [a-zA-Z_][a-zA-Z0-9_]* (or be empty), got {!r}"
#: Requests per second a route needs before its error ratio or latency can alert.
MIN_RATE = 0.1


def _check(namespace: str, window: str) -> None:
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise ValueError(ERR_NAMESPACE.format(namespace))
    if not isinstance(window, str) or not _WINDOW.match(window):
        raise ValueError(ERR_WINDOW.format(window))


class _Names:
    """Exposed metric names (namespace applied) and recording-rule names."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace
        self.rule_prefix = f"{namespace}:" if namespace else "asgi_perf:"

    def __call__(self, name: str) -> str:
        return exposed_name(name, self.ns)

    def rule(self, name: str) -> str:
        return self.rule_prefix + name


def prometheus_rules(namespace: str = "", window: str = DEFAULT_WINDOW) -> dict[str, Any]:
    """The rule groups (as a dict ready for YAML) for a registry with ``namespace``."""
    _check(namespace, window)
    m = _Names(namespace)
    w = window
    rate_route = m.rule(f"http_requests:rate{w}")
    err_route = m.rule(f"http_errors:ratio_rate{w}")
    p95_route = m.rule(f"http_request_duration_seconds:p95_{w}")
    p95_db = m.rule(f"db_query_duration_seconds:p95_{w}")
    hit_cache = m.rule(f"cache_hits:ratio_rate{w}")
    wait_sio = m.rule(f"socketio_batch_wait_seconds:p95_{w}")
    recording = [
        {
            "record": rate_route,
            "expr": f"sum by (job, method, route) (rate({m('http_requests_total')}[{w}]))",
        },
        {
            "record": err_route,
            "expr": (
                f'sum by (job, route) (rate({m("http_requests_total")}{{status=~"5.."}}[{w}]))'
                f" / sum by (job, route) (rate({m('http_requests_total')}[{w}]))"
            ),
        },
        {
            "record": p95_route,
            "expr": quantile_expr(
                0.95,
                m("http_request_duration_seconds_bucket"),
                m("http_request_duration_seconds"),
                "job, route",
                w,
            ),
        },
        {
            "record": p95_db,
            "expr": quantile_expr(
                0.95,
                m("db_query_duration_seconds_bucket"),
                m("db_query_duration_seconds"),
                "job, engine",
                w,
            ),
        },
        {
            "record": hit_cache,
            "expr": (
                f'sum by (job, cache) (rate({m("cache_requests_total")}{{result="hit"}}[{w}]))'
                f" / sum by (job, cache) (rate({m('cache_requests_total')}[{w}]))"
            ),
        },
        {
            "record": wait_sio,
            "expr": (
                "histogram_quantile(0.95, sum by (job, le) "
                f"(rate({m('socketio_batch_wait_seconds_bucket')}[{w}])))"
            ),
        },
    ]
    busy = f"sum by (job, route) ({rate_route}) > {MIN_RATE}"
    alerts = [
        _alert(
            "AsgiHighErrorRate",
            f"({err_route} > 0.05) and on (job, route) ({busy})",
            "5m",
            "critical",
            "{{ $labels.route }}: {{ $value | humanizePercentage }} of requests fail with 5xx",
        ),
        _alert(
            "AsgiHighLatency",
            f"({p95_route} > 1) and on (job, route) ({busy})",
            "10m",
            "warning",
            "{{ $labels.route }}: p95 latency {{ $value | humanizeDuration }}",
        ),
        _alert(
            "AsgiSlowDatabase",
            f"{p95_db} > 1",
            "5m",
            "warning",
            "engine {{ $labels.engine }}: query p95 {{ $value | humanizeDuration }}",
        ),
        _alert(
            "AsgiManySlowQueries",
            f"sum by (job, engine) (rate({m('db_slow_queries_total')}[{w}])) * 60 > 10",
            "10m",
            "warning",
            'engine {{ $labels.engine }}: {{ $value | printf "%.1f" }} slow queries per minute',
        ),
        _alert(
            "AsgiPoolCheckoutTimeouts",
            f"increase({m('db_pool_checkout_timeouts_total')}[{w}]) > 0",
            "0m",
            "critical",
            "engine {{ $labels.engine }}: connection pool exhausted (checkout timeouts)",
        ),
        _alert(
            "AsgiLowCacheHitRatio",
            f"({hit_cache} < 0.8) and on (job, cache) "
            f"(sum by (job, cache) (rate({m('cache_requests_total')}[{w}])) > {MIN_RATE})",
            "15m",
            "warning",
            "cache {{ $labels.cache }}: hit ratio {{ $value | humanizePercentage }}",
        ),
        _alert(
            "AsgiSocketIOSendDelay",
            f"{wait_sio} > 5",
            "2m",
            "critical",
            "Socket.IO batches wait {{ $value | humanizeDuration }} (p95) before sending",
        ),
        _alert(
            "AsgiSocketIOQueueBacklog",
            f"{m('socketio_queue_depth_max')} > 100",
            "5m",
            "warning",
            "a Socket.IO client has {{ $value }} packets queued: a slow consumer",
        ),
        _alert(
            "AsgiSocketIOBatchDrops",
            f"increase({m('socketio_batch_dropped_total')}[{w}]) > 0",
            "0m",
            "warning",
            "the Socket.IO batcher dropped items ({{ $labels.reason }})",
        ),
        _alert(
            "AsgiHighCpu",
            f"{m('system_cpu_ratio')} > 0.8",
            "5m",
            "warning",
            "host CPU at {{ $value | humanizePercentage }}",
        ),
        _alert(
            "AsgiHighMemory",
            f"{m('system_memory_ratio')} > 0.85",
            "5m",
            "warning",
            "host memory at {{ $value | humanizePercentage }}",
        ),
        _alert(
            "AsgiDiskAlmostFull",
            f"{m('system_disk_ratio')} > 0.9",
            "5m",
            "critical",
            "disk {{ $labels.path }} at {{ $value | humanizePercentage }}",
        ),
        _alert(
            "AsgiInstrumentationErrors",
            f"increase({m('asgi_perf_instrumentation_errors_total')}[10m]) > 0",
            "0m",
            "info",
            "asgi-perf swallowed errors in {{ $labels.component }} (the app was not affected)",
        ),
        _alert(
            "AsgiSeriesOverflow",
            f"increase({m('asgi_perf_series_overflow_total')}[10m]) > 0",
            "0m",
            "warning",
            "{{ $labels.metric }} reached its series cap: label values are being folded",
        ),
    ]
    return {
        "groups": [
            {"name": "asgi_perf_recording", "rules": recording},
            {"name": "asgi_perf_alerts", "rules": alerts},
        ]
    }


def _alert(name: str, expr: str, for_: str, severity: str, summary: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_ != "0m":
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary}
    return rule


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML emitter for dicts, lists, strings and numbers (no PyYAML dependency).

    Strings are written JSON-quoted, which YAML reads as double-quoted scalars.
    """
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(item, indent + 1).rstrip("\n"))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 1).rstrip("\n")
                lines.append(f"{pad}- {body.lstrip()}")
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(value))
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(str(value))


def rules_yaml(namespace: str = "", window: str = DEFAULT_WINDOW) -> str:
    """The rules file text, ready for ``rule_files:`` in prometheus.yml."""
    header = (
        "# Prometheus rules for asgi-perf (generated by `asgi-perf rules`; do not edit by hand).\n"
    )
    return header + to_yaml(prometheus_rules(namespace, window))


__all__ = [
    "DEFAULT_WINDOW",
    "MIN_RATE",
    "grafana_dashboard",
    "prometheus_rules",
    "rules_yaml",
    "to_yaml",
]

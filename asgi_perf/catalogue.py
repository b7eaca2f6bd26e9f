"""The one catalogue of every metric asgi-perf exports.

Every component asks the :class:`~asgi_perf.PerfRegistry` for its metrics by these names, so names,
help texts, label sets and default buckets are defined once and the docs' metric reference and the
tests read the same table. Names are unprefixed; ``PerfRegistry(namespace="x")`` prefixes them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Kind = Literal["counter", "gauge", "histogram", "summary"]

#: Latency buckets (seconds): fine below 100 ms where healthy services live, coarse up to 10 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Buckets for calls to a nearby server (seconds): a Redis round trip is 0.1-1 ms when healthy.
FAST_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
#: Many latency buckets for one label-less histogram (prometheus-fastapi-instrumentator's
#: ``latency_highr_buckets``): no labels, so many buckets stay cheap.
HIGHR_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30,
    60,
)  # fmt: skip
#: Item-count buckets for batches.
COUNT_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
#: Per-request query-count buckets.
QUERY_COUNT_BUCKETS: tuple[float, ...] = (0, 1, 2, 5, 10, 20, 50, 100)


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its unprefixed name, type, help text, label names and default buckets.

    For counters ``name`` carries the conventional ``_total`` suffix, as exposed.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None
    component: str = "core"


def _specs(*specs: MetricSpec) -> Mapping[str, MetricSpec]:
    return MappingProxyType({spec.name: spec for spec in specs})


CATALOGUE: Mapping[str, MetricSpec] = _specs(
    # -- HTTP ------------------------------------------------------------------------------------
    MetricSpec(
        "http_requests_total",
        "counter",
        "HTTP requests completed, by method, route template and status.",
        ("method", "route", "status"),
        component="http",
    ),
    MetricSpec(
        "http_request_duration_seconds",
        "histogram",
        "Time from request start to the last response body byte (background tasks excluded).",
        ("method", "route", "status"),
        LATENCY_BUCKETS,
        component="http",
    ),
    MetricSpec(
        "http_request_duration_highr_seconds",
        "histogram",
        "Request duration without labels, with many buckets for accurate percentiles (only with "
        "a compat setting that asks for it, such as prometheus-fastapi-instrumentator's).",
        (),
        HIGHR_BUCKETS,
        component="http",
    ),
    MetricSpec(
        "http_request_ttfb_seconds",
        "histogram",
        "Time from request start to the response start message (status line and headers).",
        ("method", "route"),
        LATENCY_BUCKETS,
        component="http",
    ),
    MetricSpec(
        "http_requests_in_progress",
        "gauge",
        "HTTP requests being handled now.",
        ("method",),
        component="http",
    ),
    MetricSpec(
        "http_request_size_bytes",
        "summary",
        "Request body bytes actually received by the application (count and sum).",
        ("method", "route"),
        component="http",
    ),
    MetricSpec(
        "http_response_size_bytes",
        "summary",
        "Response body bytes actually sent, streamed bytes included (count and sum).",
        ("method", "route"),
        component="http",
    ),
    MetricSpec(
        "http_exceptions_total",
        "counter",
        "Unhandled exceptions raised by the application, by exception type.",
        ("method", "route", "exception"),
        component="http",
    ),
    # -- Socket.IO -------------------------------------------------------------------------------
    MetricSpec(
        "socketio_connections",
        "gauge",
        "Connected Socket.IO clients now, read from the server's own state at scrape time.",
        ("namespace", "transport"),
        component="socketio",
    ),
    MetricSpec(
        "socketio_connects_total",
        "counter",
        "Socket.IO connection attempts by outcome (accepted, rejected).",
        ("namespace", "outcome"),
        component="socketio",
    ),
    MetricSpec(
        "socketio_disconnects_total",
        "counter",
        "Socket.IO disconnections by reason.",
        ("namespace", "reason"),
        component="socketio",
    ),
    MetricSpec(
        "socketio_events_received_total",
        "counter",
        "Socket.IO events received from clients.",
        ("namespace", "event"),
        component="socketio",
    ),
    MetricSpec(
        "socketio_events_emitted_total",
        "counter",
        "Socket.IO events emitted by the server.",
        ("namespace", "event"),
        component="socketio",
    ),
    MetricSpec(
        "socketio_received_bytes_total",
        "counter",
        "Bytes of Socket.IO packets received, as encoded on the wire.",
        ("namespace",),
        component="socketio",
    ),
    MetricSpec(
        "socketio_sent_bytes_total",
        "counter",
        "Bytes of Socket.IO packets sent, as encoded on the wire.",
        ("namespace",),
        component="socketio",
    ),
    MetricSpec(
        "socketio_handler_duration_seconds",
        "histogram",
        "Time spent in Socket.IO event handlers.",
        ("namespace", "event"),
        LATENCY_BUCKETS,
        component="socketio",
    ),
    MetricSpec(
        "socketio_queue_depth_max",
        "gauge",
        "Largest engine.io outgoing queue among connected sockets (a slow consumer shows here).",
        (),
        component="socketio",
    ),
    MetricSpec(
        "socketio_queued_packets",
        "gauge",
        "Packets waiting in engine.io outgoing queues, summed over connected sockets.",
        (),
        component="socketio",
    ),
    MetricSpec(
        "socketio_batches_total",
        "counter",
        "Batches sent by the batcher, by event and flush reason.",
        ("event", "flush_reason"),
        component="socketio",
    ),
    MetricSpec(
        "socketio_batch_items",
        "histogram",
        "Items per batch sent.",
        (),
        COUNT_BUCKETS,
        component="socketio",
    ),
    MetricSpec(
        "socketio_batch_wait_seconds",
        "histogram",
        "Time the oldest item of a batch waited before the batch was sent.",
        (),
        LATENCY_BUCKETS,
        component="socketio",
    ),
    MetricSpec(
        "socketio_batch_pending",
        "gauge",
        "Items buffered in the batcher, not yet sent.",
        (),
        component="socketio",
    ),
    MetricSpec(
        "socketio_batch_dropped_total",
        "counter",
        "Payloads the batcher did not deliver, by reason (overflow policy, failed, cancelled or "
        "unserialisable send).",
        ("reason",),
        component="socketio",
    ),
    # -- SQLAlchemy ------------------------------------------------------------------------------
    MetricSpec(
        "db_query_duration_seconds",
        "histogram",
        "Database statement execution time, by engine, operation and outcome (ok|error|cancelled).",
        ("engine", "operation", "outcome"),
        LATENCY_BUCKETS,
        component="sqlalchemy",
    ),
    MetricSpec(
        "db_slow_queries_total",
        "counter",
        "Statements slower than the engine's slow-query threshold.",
        ("engine", "operation"),
        component="sqlalchemy",
    ),
    MetricSpec(
        "db_query_errors_total",
        "counter",
        "Failed statements, by error class.",
        ("engine", "error"),
        component="sqlalchemy",
    ),
    MetricSpec(
        "db_rows_total",
        "counter",
        "Parameter sets executed by executemany / insertmanyvalues cursor executions.",
        ("engine", "operation"),
        component="sqlalchemy",
    ),
    MetricSpec(
        "db_pool_size",
        "gauge",
        "Configured connection pool size, read at scrape time.",
        ("engine",),
        component="sqlalchemy",
    ),
    MetricSpec(
        "db_pool_checked_out",
        "gauge",
        "Connections checked out of the pool now.",
        ("engine",),
        component="sqlalchemy",
    ),
    MetricSpec(
        "db_pool_checked_in",
        "gauge",
        "Idle connections in the pool now.",
        ("engine",),
        component="sqlalchemy",
    ),
    MetricSpec(
        "db_pool_overflow",
        "gauge",
        "Overflow connections open beyond the pool size now (never negative).",
        ("engine",),
        component="sqlalchemy",
    ),
    MetricSpec(
        "db_pool_checkout_seconds",
        "histogram",
        "Time waiting to check a connection out of the pool.",
        ("engine",),
        LATENCY_BUCKETS,
        component="sqlalchemy",
    ),
    MetricSpec(
        "db_pool_checkout_timeouts_total",
        "counter",
        "Pool checkouts that timed out (QueuePool limit reached).",
        ("engine",),
        component="sqlalchemy",
    ),
    MetricSpec(
        "db_connections_created_total",
        "counter",
        "New DBAPI connections opened by the pool.",
        ("engine",),
        component="sqlalchemy",
    ),
    MetricSpec(
        "db_connections_invalidated_total",
        "counter",
        "Pooled connections invalidated.",
        ("engine",),
        component="sqlalchemy",
    ),
    MetricSpec(
        "db_queries_per_request",
        "histogram",
        "Statements executed while handling one HTTP request.",
        ("engine",),
        QUERY_COUNT_BUCKETS,
        component="sqlalchemy",
    ),
    MetricSpec(
        "db_time_per_request_seconds",
        "histogram",
        "Total statement time spent while handling one HTTP request.",
        ("engine",),
        LATENCY_BUCKETS,
        component="sqlalchemy",
    ),
    # -- Cache -----------------------------------------------------------------------------------
    MetricSpec(
        "cache_requests_total",
        "counter",
        "Cache lookups by result (hit, miss); the reader computes hit / (hit + miss).",
        ("cache", "result"),
        component="cache",
    ),
    MetricSpec(
        "cache_evictions_total",
        "counter",
        "Entries removed, by reason (capacity, expired, explicit).",
        ("cache", "reason"),
        component="cache",
    ),
    MetricSpec(
        "cache_entries",
        "gauge",
        "Entries in the cache now, read at scrape time.",
        ("cache",),
        component="cache",
    ),
    MetricSpec(
        "cache_maxsize",
        "gauge",
        "Configured cache capacity.",
        ("cache",),
        component="cache",
    ),
    MetricSpec(
        "cache_load_duration_seconds",
        "histogram",
        "Time spent loading a missing value (the decorated function's run).",
        ("cache",),
        LATENCY_BUCKETS,
        component="cache",
    ),
    MetricSpec(
        "cache_load_errors_total",
        "counter",
        "Loads that raised.",
        ("cache",),
        component="cache",
    ),
    MetricSpec(
        "cache_coalesced_total",
        "counter",
        "Calls that waited for another caller's in-flight load instead of loading again.",
        ("cache",),
        component="cache",
    ),
    MetricSpec(
        "cache_rejected_total",
        "counter",
        "Values not stored because they are larger than the cache's maxsize.",
        ("cache",),
        component="cache",
    ),
    # -- Cache: Redis second tier ---------------------------------------------------------------
    MetricSpec(
        "cache_tier_requests_total",
        "counter",
        "Lookups in a second cache tier after a local miss, by tier and result (hit, miss, error).",
        ("cache", "tier", "result"),
        component="cache_redis",
    ),
    MetricSpec(
        "cache_redis_errors_total",
        "counter",
        "Redis commands of a tiered cache that failed (connection, timeout, error reply).",
        ("cache", "operation"),
        component="cache_redis",
    ),
    MetricSpec(
        "cache_redis_skipped_total",
        "counter",
        "Redis commands of a tiered cache not sent because its circuit breaker was open.",
        ("cache", "operation"),
        component="cache_redis",
    ),
    MetricSpec(
        "cache_redis_fallbacks_total",
        "counter",
        "Local misses served by the loader because Redis could not be read (error, circuit_open).",
        ("cache", "reason"),
        component="cache_redis",
    ),
    MetricSpec(
        "cache_redis_serialization_errors_total",
        "counter",
        "Values the serializer refused (dumps) and stored bytes it could not read (loads).",
        ("cache", "operation"),
        component="cache_redis",
    ),
    MetricSpec(
        "cache_redis_invalidations_total",
        "counter",
        "Cross-process invalidation messages, by event (sent, received, malformed).",
        ("cache", "event"),
        component="cache_redis",
    ),
    MetricSpec(
        "cache_redis_duration_seconds",
        "histogram",
        "Time of the Redis commands of a tiered cache (failed and timed-out ones included).",
        ("cache", "operation"),
        FAST_LATENCY_BUCKETS,
        component="cache_redis",
    ),
    MetricSpec(
        "cache_redis_resubscribes_total",
        "counter",
        "Times the invalidation subscription was re-established (each clears the local tier).",
        ("cache",),
        component="cache_redis",
    ),
    MetricSpec(
        "cache_redis_subscribed",
        "gauge",
        "1 while the tiered cache is subscribed to its invalidation channel, else 0.",
        ("cache",),
        component="cache_redis",
    ),
    MetricSpec(
        "cache_redis_circuit_open",
        "gauge",
        "1 while the tiered cache's circuit breaker skips Redis, else 0.",
        ("cache",),
        component="cache_redis",
    ),
    # -- Operations: custom timers and counters, system figures, alerts -------------------------
    MetricSpec(
        "app_timer_duration_seconds",
        "histogram",
        "Duration of code timed with registry.timed() / registry.timer(), by timer name.",
        ("name",),
        LATENCY_BUCKETS,
        component="ops",
    ),
    MetricSpec(
        "app_timer_errors_total",
        "counter",
        "Timed calls that raised, by timer name (their duration is still recorded).",
        ("name",),
        component="ops",
    ),
    MetricSpec(
        "app_events_total",
        "counter",
        "Custom events counted with registry.count(), by name.",
        ("name",),
        component="ops",
    ),
    MetricSpec(
        "system_cpu_ratio",
        "gauge",
        "Host CPU utilisation (0-1) since the previous scrape.",
        (),
        component="ops",
    ),
    MetricSpec(
        "system_memory_ratio",
        "gauge",
        "Host memory in use (0-1): 1 - available / total.",
        (),
        component="ops",
    ),
    MetricSpec(
        "system_disk_ratio",
        "gauge",
        "Disk space in use (0-1) on the filesystem holding the watched path.",
        ("path",),
        component="ops",
    ),
    MetricSpec(
        "system_process_cpu_ratio",
        "gauge",
        "This process' CPU time per wall-clock second since the previous scrape (1 = one core).",
        (),
        component="ops",
    ),
    MetricSpec(
        "system_process_resident_bytes",
        "gauge",
        "This process' resident set size.",
        (),
        component="ops",
    ),
    MetricSpec(
        "system_process_open_fds",
        "gauge",
        "File descriptors this process has open.",
        (),
        component="ops",
    ),
    MetricSpec(
        "asgi_perf_alerts_firing",
        "gauge",
        "1 while an in-process alert rule is firing, else 0, by rule and severity.",
        ("rule", "severity"),
        component="ops",
    ),
    MetricSpec(
        "asgi_perf_alert_notifications_total",
        "counter",
        "Alert notifications by notifier and outcome (sent, failed, dropped).",
        ("notifier", "outcome"),
        component="ops",
    ),
    # -- Batch jobs (asgi_perf.export.push_on_exit) ------------------------------------------
    MetricSpec(
        "batch_job_duration_seconds",
        "gauge",
        "Wall-clock duration of the job's last run, pushed when it ended.",
        (),
        component="push",
    ),
    MetricSpec(
        "batch_job_success",
        "gauge",
        "1 if the job's last run succeeded, 0 if it raised or exited non-zero.",
        (),
        component="push",
    ),
    MetricSpec(
        "batch_job_last_success_timestamp_seconds",
        "gauge",
        "Unix time the job last succeeded; only a successful run pushes it.",
        (),
        component="push",
    ),
    # -- Self ------------------------------------------------------------------------------------
    MetricSpec(
        "asgi_perf_instrumentation_errors_total",
        "counter",
        "Errors inside asgi-perf's own instrumentation (swallowed; the app was unaffected).",
        ("component",),
    ),
    MetricSpec(
        "asgi_perf_series_overflow_total",
        "counter",
        "Observations folded into the overflow series because a metric reached its series cap.",
        ("metric",),
    ),
)

#: prometheus_client's process, platform and garbage-collector collectors, on every registry
#: asgi-perf creates (``PerfRegistry(process_metrics=False)`` leaves them out). Their names are
#: the standard ones every Prometheus client library uses and are never namespaced; in
#: multi-worker mode each live worker's series carry a ``pid`` label (see docs/deployment.md).
#: ``process_*`` exist where ``/proc`` does (Linux).
STANDARD_METRICS: Mapping[str, MetricSpec] = _specs(
    MetricSpec("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
               component="process"),
    MetricSpec("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
               component="process"),
    MetricSpec("process_start_time_seconds", "gauge",
               "Start time of the process since unix epoch in seconds.", component="process"),
    MetricSpec("process_cpu_seconds_total", "counter",
               "Total user and system CPU time spent in seconds.", component="process"),
    MetricSpec("process_open_fds", "gauge", "Number of open file descriptors.",
               component="process"),
    MetricSpec("process_max_fds", "gauge", "Maximum number of open file descriptors.",
               component="process"),
    MetricSpec("python_info", "gauge", "Python platform information",
               ("version", "implementation", "major", "minor", "patchlevel"), component="process"),
    MetricSpec("python_gc_objects_collected_total", "counter", "Objects collected during gc",
               ("generation",), component="process"),
    MetricSpec("python_gc_objects_uncollectable_total", "counter",
               "Uncollectable objects found during GC", ("generation",), component="process"),
    MetricSpec("python_gc_collections_total", "counter",
               "Number of times this generation was collected", ("generation",),
               component="process"),
)  # fmt: skip

#: Series suffixes a histogram (or summary) exposes next to its catalogue name.
_SERIES_SUFFIXES = ("_bucket", "_sum", "_count")


def exposed_name(name: str, namespace: str = "") -> str:
    """The name a catalogue metric's series is exposed under, with ``namespace`` applied.

    ``name`` is a catalogue name, or a histogram's with ``_bucket``, ``_sum`` or ``_count``;
    anything else raises ``KeyError``, so a rule or dashboard query cannot name a metric that
    does not exist.
    """
    base = name
    for suffix in _SERIES_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in CATALOGUE:
            base = name.removesuffix(suffix)
    if base not in CATALOGUE:
        raise KeyError(name)
    return f"{namespace}_{name}" if namespace else name


__all__ = [
    "CATALOGUE",
    "COUNT_BUCKETS",
    "FAST_LATENCY_BUCKETS",
    "HIGHR_BUCKETS",
    "LATENCY_BUCKETS",
    "QUERY_COUNT_BUCKETS",
    "STANDARD_METRICS",
    "Kind",
    "MetricSpec",
    "exposed_name",
]

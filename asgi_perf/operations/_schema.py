"""The JSON summary's schema: what ``registry.summary()`` and ``GET .../summary`` return.

One TypedDict per section, shared by the summary builder (one section builder per feature), the
monitor's snapshots and alert figures, the dashboard page, the ``asgi-perf report`` CLI and the
tests, which check a real summary against these types key by key. Counts are totals since the
registry was created; rates, ratios and percentiles cover the window (see ``docs/operations.md``).
``None`` means "not measured", never zero.
"""

from __future__ import annotations

from typing import Any, TypedDict


class Window(TypedDict):
    """The time the rates, ratios and percentiles cover (unix seconds)."""

    start: float
    end: float
    seconds: float


class RouteRow(TypedDict):
    method: str
    route: str
    requests: int
    errors: int
    rate: float
    error_rate: float | None
    avg: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    window_requests: int


class HttpSection(TypedDict):
    requests: int
    errors: int
    rate: float
    error_rate: float | None
    window_requests: int
    avg: float | None
    p95: float | None
    in_progress: int
    in_progress_by_method: dict[str, int]
    exceptions: dict[str, int]
    routes: list[RouteRow]


class PoolFigures(TypedDict, total=False):
    """What the engine's pool reports (NullPool and StaticPool report nothing)."""

    size: int
    checked_out: int
    checked_in: int
    overflow: int
    checkout_timeouts: int
    checkout_p95: float | None


class EngineRow(TypedDict):
    engine: str
    queries: int
    errors: int
    cancelled: int
    slow: int
    slow_per_minute: float
    queries_per_request: float | None
    pool: PoolFigures
    rate: float
    avg: float | None
    p95: float | None
    p99: float | None
    window_queries: int
    recent_slow: list[dict[str, Any]]


class SlowQueryGroup(TypedDict):
    """One slow statement shape: its slow runs since start, by normalised statement (no
    parameters, literals or comments). ``p95`` covers its most recent slow runs (seconds)."""

    engine: str
    operation: str
    fingerprint: str
    sql: str
    count: int
    p95: float | None
    max: float | None
    last_seen: float


class DbSection(TypedDict):
    engines: list[EngineRow]
    slow_queries: list[dict[str, Any]]
    slow_query_groups: list[SlowQueryGroup]


class RedisTierRow(TypedDict):
    hits: int
    misses: int
    errors: int
    hit_ratio: float | None
    fallbacks: int
    get_p95: float | None
    subscribed: bool | None
    circuit_open: bool | None


class CacheRow(TypedDict):
    cache: str
    hits: int
    misses: int
    hit_ratio: float | None
    window_hit_ratio: float | None
    window_requests: int
    entries: int | None
    maxsize: int | None
    evictions: dict[str, int]
    load_p95: float | None
    load_errors: int
    coalesced: int
    redis: RedisTierRow | None


class CacheSection(TypedDict):
    caches: list[CacheRow]


class SocketIOSection(TypedDict):
    enabled: bool
    connections: int
    connections_by_namespace: dict[str, int]
    connects: dict[str, int]
    disconnects: dict[str, int]
    events_received: int
    events_emitted: int
    events_received_rate: float
    events_emitted_rate: float
    handler_p95: float | None
    batches: int
    batch_items_avg: float | None
    batch_wait_p95: float | None
    batch_pending: int | None
    batch_dropped: dict[str, int]
    queue_depth_max: int | None
    queue_depth_sum: int | None


class TimerStats(TypedDict):
    """One timer (seconds): ``count == 0`` and ``None`` for the rest if it never ran."""

    count: int
    total: float
    errors: int
    min: float | None
    max: float | None
    avg: float | None
    p50: float | None
    p95: float | None
    p99: float | None


class TimersSection(TypedDict):
    timers: dict[str, TimerStats]
    counters: dict[str, float]


class AlertsSection(TypedDict):
    enabled: bool
    firing: list[dict[str, Any]]
    pending: list[dict[str, Any]]


class InstrumentationSection(TypedDict):
    """asgi-perf's own swallowed errors (by component) and series-cap overflows (by metric)."""

    errors: dict[str, float]
    series_overflow: dict[str, float]


class SystemFigures(TypedDict):
    """Process and host figures (percentages 0-100); ``None`` where the platform cannot tell."""

    source: str
    cpu_percent: float | None
    memory_percent: float | None
    disk_percent: float | None
    disk_path: str
    process_cpu_percent: float | None
    rss_bytes: int | None
    open_fds: int | None
    cpu_count: int | None


class Summary(TypedDict):
    generated_at: float
    started_at: float
    uptime_seconds: float
    namespace: str
    window: Window
    http: HttpSection
    db: DbSection
    cache: CacheSection
    socketio: SocketIOSection
    timers: TimersSection
    alerts: AlertsSection
    instrumentation: InstrumentationSection
    system: SystemFigures


__all__ = [
    "AlertsSection",
    "CacheRow",
    "CacheSection",
    "DbSection",
    "EngineRow",
    "HttpSection",
    "InstrumentationSection",
    "PoolFigures",
    "RedisTierRow",
    "RouteRow",
    "SlowQueryGroup",
    "SocketIOSection",
    "Summary",
    "SystemFigures",
    "TimerStats",
    "TimersSection",
    "Window",
]

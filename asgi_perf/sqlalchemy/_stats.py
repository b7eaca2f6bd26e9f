"""The SQLAlchemy series store: per-registry state shared by every instrumented engine.

Query durations are kept in plain :class:`~asgi_perf._histogram.PlainHistogram` objects behind one
short lock per engine (prometheus_client's ``observe`` takes several locks and walks the buckets in
Python: it alone would cost more than the whole budget per query) and exported by one scrape-time
collector, which also reads the pools' state from their owners. One collector per registry, because
two collectors may not export the same metric family.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol, cast

from prometheus_client.metrics_core import Metric

from .._exemplars import histogram_class, shared_histogram_class
from .._histogram import PlainHistogram
from .._labels import OVERFLOW
from .._native_snapshots import add_histogram
from .._shared import SharedPlainHistogram
from ..catalogue import LATENCY_BUCKETS, QUERY_COUNT_BUCKETS
from ..registry import SLOW_QUERIES, CatalogueCollector, ComponentKey, PerfRegistry

_POOL_GAUGES = (
    ("db_pool_size", "size"),
    ("db_pool_checked_out", "checkedout"),
    ("db_pool_checked_in", "checkedin"),
    ("db_pool_overflow", "overflow"),
)
_GAUGE_NAMES = frozenset(metric for metric, _ in _POOL_GAUGES)


class PoolSource(Protocol):
    """What the collector needs from an instrumented engine."""

    name: str

    def current_pool(self) -> Any: ...


#: Builds one histogram: ``(catalogue metric, bounds, labels)``.
HistogramFactory = Callable[[str, tuple[float, ...], list[tuple[str, str]]], PlainHistogram]


class EngineSeries:
    """Everything recorded for one engine name.

    Statement and checkout writers (any thread) hold ``lock`` for two list updates. The two
    per-request histograms are written only by :class:`RequestQueries` on the event-loop thread,
    without a lock, like the HTTP histograms.
    """

    __slots__ = ("checkout", "durations", "lock", "per_request_count", "per_request_time", "source")

    def __init__(
        self, source: PoolSource, buckets: tuple[float, ...], make: HistogramFactory
    ) -> None:
        self.source = source
        self.lock = threading.Lock()
        self.durations: dict[tuple[str, str], PlainHistogram] = {}
        engine = [("engine", source.name)]
        self.checkout = make("db_pool_checkout_seconds", buckets, engine)
        self.per_request_count = make("db_queries_per_request", QUERY_COUNT_BUCKETS, engine)
        self.per_request_time = make("db_time_per_request_seconds", buckets, engine)


class SqlStats(CatalogueCollector):
    """Shared by every instrumented engine on one registry; registered once as a collector."""

    metrics = (
        "db_query_duration_seconds",
        "db_pool_checkout_seconds",
        "db_queries_per_request",
        "db_time_per_request_seconds",
        *(metric for metric, _ in _POOL_GAUGES),
    )

    def __init__(self, registry: PerfRegistry) -> None:
        super().__init__(registry)
        self.engines: dict[str, EngineSeries] = {}
        #: ``(name, per-request count, per-request time)`` per engine, rebuilt on add/remove so
        #: finishing a request walks one tuple instead of copying the engines dict.
        self.request_series: tuple[tuple[str, PlainHistogram, PlainHistogram], ...] = ()
        self.series_count = 0
        self._lock = threading.Lock()
        self._shared = registry.shared
        self._durations = histogram_class(registry)
        self._shared_durations = shared_histogram_class(registry)
        if self._shared is not None:
            # Multi-worker mode: the histograms live in shared memory (exact at every scrape);
            # the pool gauges are still read from the pools and published.
            registry.shared_families.update(
                registry.metric_name(m) for m in self.metrics if m not in _GAUGE_NAMES
            )

    def histogram(
        self, metric: str, bounds: tuple[float, ...], labels: list[tuple[str, str]]
    ) -> PlainHistogram:
        """A histogram of ``metric`` in the store this registry records into."""
        if self._shared is None:
            # Query durations: native buckets and/or exemplars, as the registry says.
            if metric == "db_query_duration_seconds":
                return self._durations(bounds)
            return PlainHistogram(bounds)
        spec = self.registry.spec(metric)
        name = self.registry.metric_name(metric)
        if metric == "db_query_duration_seconds":
            return self._shared_durations(bounds, self._shared, name, spec.help, labels)
        return SharedPlainHistogram(bounds, self._shared, name, spec.help, labels)

    def add(self, source: PoolSource, buckets: tuple[float, ...]) -> EngineSeries:
        with self._lock:
            series = self.engines[source.name] = EngineSeries(source, buckets, self.histogram)
            self._update_request_series()
            return series

    def remove(self, name: str) -> None:
        with self._lock:
            series = self.engines.pop(name, None)
            if series is not None:
                self.series_count -= len(series.durations)
                self._update_request_series()

    def _update_request_series(self) -> None:
        self.request_series = tuple(
            (name, series.per_request_count, series.per_request_time)
            for name, series in self.engines.items()
        )

    def duration_series(self, engine: EngineSeries, operation: str, outcome: str) -> PlainHistogram:
        """The histogram for ``(operation, outcome)``, created under the registry's series cap."""
        key = (operation, outcome)
        with self._lock:
            hist = engine.durations.get(key)
            if hist is not None:
                return hist
            if self.series_count >= self.registry.max_series_per_metric:
                self.registry.count_overflow("db_query_duration_seconds")
                key = (OVERFLOW, outcome)
                hist = engine.durations.get(key)
                if hist is not None:
                    return hist
            labels = [("engine", engine.source.name), ("operation", key[0]), ("outcome", key[1])]
            hist = engine.durations[key] = self.histogram(
                "db_query_duration_seconds", engine.checkout.bounds, labels
            )
            self.series_count += 1
            return hist

    # -- scrape time -----------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        f = self.families()
        durations = f["db_query_duration_seconds"]
        checkout = f["db_pool_checkout_seconds"]
        per_count = f["db_queries_per_request"]
        per_time = f["db_time_per_request_seconds"]
        gauges = [(f[metric], method) for metric, method in _POOL_GAUGES]
        for name, series in list(self.engines.items()):
            with series.lock:
                # Copy under the writers' lock so _count always equals the +Inf bucket.
                for (operation, outcome), hist in list(series.durations.items()):
                    add_histogram(durations, [name, operation, outcome], hist)
                other = [
                    (family, h.cumulative())
                    for family, h in (
                        (checkout, series.checkout),
                        (per_count, series.per_request_count),
                        (per_time, series.per_request_time),
                    )
                ]
            for family, (buckets, total, count) in other:
                if count:
                    family.add_metric([name], buckets, total)
            self._pool_gauges(name, series.source, gauges)
        return iter(f.values())

    def _pool_gauges(self, name: str, source: PoolSource, gauges: list[tuple[Any, str]]) -> None:
        try:
            pool = source.current_pool()
            for family, method in gauges:
                # NullPool and StaticPool keep no counts: export what the pool has, nothing else.
                read = getattr(pool, method, None)
                if callable(read):
                    family.add_metric([name], max(0, int(read())))
        except Exception as exc:  # noqa: BLE001 - a broken pool must not break the scrape
            self.registry.report_error("sqlalchemy", exc)


#: Slow durations kept per fingerprint for its p95 (the most recent ones).
SLOW_GROUP_SAMPLES = 128


class SlowQueryLog:
    """The bounded list of recent slow queries and their per-fingerprint groups (the JSON summary
    and dashboard read both).

    ``recent()`` returns dicts with exactly the keys ``engine, operation, fingerprint, sql,
    duration, time, count``, newest first. ``count`` is how many slow occurrences of that
    fingerprint were seen so far. ``groups()`` returns one dict per (engine, fingerprint) with
    ``count``, ``p95`` (over its last :data:`SLOW_GROUP_SAMPLES` slow runs), ``max`` and
    ``last_seen``, most recently seen first. Both track at most ``max_fingerprints``
    fingerprints; the least recently seen are forgotten first. Parameters are never stored here:
    ``sql`` is the normalised, literal- and comment-free statement.
    """

    def __init__(self, maxlen: int = 100, max_fingerprints: int = 1000) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=maxlen)
        # (engine, fingerprint) -> [operation, sql, count, recent durations, max, last seen]
        self._groups: dict[tuple[str, str], list[Any]] = {}
        self._max_fingerprints = max_fingerprints
        self._lock = threading.Lock()

    def add(self, engine: str, operation: str, fingerprint: str, sql: str, duration: float) -> int:
        """Record one slow query; returns the fingerprint's count so far."""
        key = (engine, fingerprint)
        now = time.time()
        with self._lock:
            group = self._groups.pop(key, None)
            if group is None:
                if len(self._groups) >= self._max_fingerprints:
                    del self._groups[next(iter(self._groups))]
                group = [operation, sql, 0, deque(maxlen=SLOW_GROUP_SAMPLES), 0.0, now]
            # Re-inserted at the end: the dict's order is least recently seen first.
            self._groups[key] = group
            group[2] += 1
            group[3].append(duration)
            group[4] = max(group[4], duration)
            group[5] = now
            count: int = group[2]
            self._entries.append(
                {
                    "engine": engine,
                    "operation": operation,
                    "fingerprint": fingerprint,
                    "sql": sql,
                    "duration": duration,
                    "time": now,
                    "count": count,
                }
            )
        return count

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The most recent slow queries, newest first (at most ``limit``)."""
        with self._lock:
            items = [dict(entry) for entry in reversed(self._entries)]
        return items if limit is None else items[: max(0, limit)]

    def groups(self, limit: int | None = None) -> list[dict[str, Any]]:
        """One row per slow statement shape, most recently seen first (at most ``limit``)."""
        with self._lock:
            rows = [
                (key, group[0], group[1], group[2], sorted(group[3]), group[4], group[5])
                for key, group in reversed(self._groups.items())
            ]
        if limit is not None:
            rows = rows[: max(0, limit)]
        return [
            {
                "engine": engine,
                "operation": operation,
                "fingerprint": fingerprint,
                "sql": sql,
                "count": count,
                # Nearest rank over the kept durations: an observed value, never an estimate.
                "p95": durations[max(0, math.ceil(0.95 * len(durations)) - 1)],
                "max": longest,
                "last_seen": last_seen,
            }
            for (engine, fingerprint), operation, sql, count, durations, longest, last_seen in rows
        ]

    def __len__(self) -> int:
        return len(self._entries)


class RequestQueries:
    """Per-HTTP-request query counts and time (a :class:`~asgi_perf.registry.RequestHook`).

    ``request_started`` puts a fresh accumulator in a ContextVar; the instrumented engines add to
    it from the request's task (or a thread or greenlet that copied its context: the accumulator
    is a mutable object, so copies share it); ``request_finished`` observes one value per
    instrumented engine, zero included, so "requests that touched no database" is visible too.

    Both run on the HTTP middleware's event-loop thread, the only writer of the per-request
    histograms, so finishing a request takes no lock: per engine, a dict lookup and two plain
    observes. Requests the middleware excludes (``exclude_paths``, ``exclude_patterns``: health
    checks, ``/metrics``) never reach the hook and are not counted.
    """

    def __init__(self, stats: SqlStats) -> None:
        self.stats = stats
        # One variable per registry: two registries in one process never see each other's counts.
        self.var: ContextVar[dict[str, list[Any]] | None] = ContextVar(
            "asgi_perf_sqlalchemy_request", default=None
        )

    def request_started(self) -> Any:
        acc: dict[str, list[Any]] = {}
        return self.var.set(acc), acc

    def request_finished(self, state: Any) -> None:
        token, acc = state
        try:
            self.var.reset(token)
        except ValueError:
            # Finished in another context than it started: clear this one instead.
            self.var.set(None)
        for name, count_hist, time_hist in self.stats.request_series:
            entry = acc.get(name)
            if entry is None:
                count_hist.observe(0)
                time_hist.observe(0.0)
            else:
                count_hist.observe(entry[0])
                time_hist.observe(entry[1])


#: The registry's SQLAlchemy series and per-request hook, shared by every instrumented engine.
SQL_STATS: ComponentKey[SqlStats] = ComponentKey("sqlalchemy")
REQUEST_QUERIES: ComponentKey[RequestQueries] = ComponentKey("sqlalchemy.requests")


def stats_for(registry: PerfRegistry) -> SqlStats:
    """The registry's one :class:`SqlStats`, registered as a collector on first use."""
    created = False

    def make() -> SqlStats:
        nonlocal created
        created = True
        return SqlStats(registry)

    stats = registry.component(SQL_STATS, make)
    if created:
        registry.register(stats)
    return stats


def request_hook_for(registry: PerfRegistry, stats: SqlStats) -> RequestQueries:
    """The registry's one :class:`RequestQueries`, added to ``request_hooks`` once."""
    hook = registry.component(REQUEST_QUERIES, lambda: RequestQueries(stats))
    if hook not in registry.request_hooks:
        registry.request_hooks.append(hook)
    return hook


def slow_log_for(registry: PerfRegistry) -> SlowQueryLog:
    """The registry's one :class:`SlowQueryLog` (the summary reads it as :data:`SLOW_QUERIES`)."""
    # Only this integration creates the log under SLOW_QUERIES, so what it finds is a SlowQueryLog.
    return cast("SlowQueryLog", registry.component(SLOW_QUERIES, SlowQueryLog))


__all__ = [
    "LATENCY_BUCKETS",
    "REQUEST_QUERIES",
    "SLOW_GROUP_SAMPLES",
    "SLOW_QUERIES",
    "SQL_STATS",
    "EngineSeries",
    "RequestQueries",
    "SlowQueryLog",
    "SqlStats",
    "request_hook_for",
    "slow_log_for",
    "stats_for",
]

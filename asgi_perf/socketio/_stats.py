"""The Socket.IO series store: plain ints on the event-loop thread, exported at scrape time.

One store per registry, shared by every instrumented server and every batcher on it. Counters and
histograms are plain Python numbers (no prometheus_client lock per event); gauges — connections,
engine.io queue depth, batcher backlog — are read from their owners when ``/metrics`` is scraped,
so they cannot drift and are never negative.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric

from .._exemplars import histogram_class, shared_histogram_class
from .._histogram import PlainHistogram
from .._labels import OVERFLOW
from .._native_snapshots import add_histogram
from .._shared import SharedCounterDict, SharedPlainHistogram
from ..catalogue import COUNT_BUCKETS, LATENCY_BUCKETS
from ..registry import CatalogueCollector, ComponentKey, PerfRegistry
from ._batching import DROP_REASONS

Key = tuple[str, ...]

#: The counters, kept as plain numbers keyed by their label values (in the catalogue's order).
_COUNTERS = (
    "socketio_connects_total",
    "socketio_disconnects_total",
    "socketio_events_received_total",
    "socketio_events_emitted_total",
    "socketio_received_bytes_total",
    "socketio_sent_bytes_total",
    "socketio_batches_total",
    "socketio_batch_dropped_total",
)

#: Read from the servers and batchers at scrape time (published in multi-worker mode).
_GAUGES = frozenset(
    {
        "socketio_connections",
        "socketio_queue_depth_max",
        "socketio_queued_packets",
        "socketio_batch_pending",
    }
)

ERR_SHARED_BUCKETS = (
    "this registry already records Socket.IO handler durations with other buckets; "
    "use one bucket configuration per registry"
)


class ServerState(Protocol):
    """What an instrumented server reports at scrape time."""

    def connections(self) -> Iterable[tuple[str, str, int]] | None:
        """``(namespace label, transport, count)`` triples; ``None`` when they cannot be read."""
        ...

    def queue_depths(self) -> Iterable[int] | None:
        """The outgoing queue length of every engine.io socket; ``None`` when unreadable."""
        ...


class SocketIOStats(CatalogueCollector):
    """Every Socket.IO series of one registry. The event loop writes; scrapes read copies."""

    metrics = (
        *_COUNTERS,
        "socketio_handler_duration_seconds",
        "socketio_batch_items",
        "socketio_batch_wait_seconds",
        "socketio_connections",
        "socketio_queue_depth_max",
        "socketio_queued_packets",
        "socketio_batch_pending",
    )

    def __init__(self, registry: PerfRegistry) -> None:
        super().__init__(registry)
        # Set by the first hook on this registry (a batcher alone has no handler histogram).
        self.handler_buckets: tuple[float, ...] | None = None
        self.limit = registry.max_series_per_metric
        self._shared = registry.shared
        self._handler_histogram = histogram_class(registry)
        self.counters: dict[str, MutableMapping[Key, float]] = {
            name: self._counter_dict(name) for name in _COUNTERS
        }
        self.handler: dict[Key, PlainHistogram] = {}
        self.batch_items = self._histogram("socketio_batch_items", COUNT_BUCKETS, ())
        self.batch_wait = self._histogram("socketio_batch_wait_seconds", LATENCY_BUCKETS, ())
        if self._shared is not None:
            # Multi-worker mode: counters and histograms in shared memory (exact at every
            # scrape); connections and queues are still read from the servers and published.
            registry.shared_families.update(
                registry.metric_name(m).removesuffix("_total")
                for m in self.metrics
                if m not in _GAUGES
            )
        # Weak: a server or batcher that is gone stops being reported, nothing to unregister.
        self.servers: weakref.WeakSet[Any] = weakref.WeakSet()
        self.batchers: weakref.WeakSet[Any] = weakref.WeakSet()
        # Declared up front so an alert on drops has a zero to compare with from the start.
        for reason in DROP_REASONS:
            self.counters["socketio_batch_dropped_total"][(reason,)] = 0

    def _counter_dict(self, name: str) -> MutableMapping[Key, float]:
        if self._shared is None:
            return {}
        spec = self.registry.spec(name)
        family = self.registry.metric_name(name).removesuffix("_total")
        return SharedCounterDict(self._shared, family, spec.help, spec.labels)

    def _histogram(self, name: str, bounds: tuple[float, ...], key: Key) -> PlainHistogram:
        if self._shared is None:
            if name == "socketio_handler_duration_seconds":
                return self._handler_histogram(
                    bounds
                )  # native and/or with exemplars, as the registry says
            return PlainHistogram(bounds)
        spec = self.registry.spec(name)
        labels = list(zip(spec.labels, key, strict=True))
        make = (
            shared_histogram_class(self.registry)
            if name == "socketio_handler_duration_seconds"
            else SharedPlainHistogram
        )
        return make(bounds, self._shared, self.registry.metric_name(name), spec.help, labels)

    def claim_buckets(self, buckets: tuple[float, ...]) -> None:
        """Fix the handler-duration buckets; ``ValueError`` if a hook already chose others."""
        if self.handler_buckets is None:
            self.handler_buckets = buckets
        elif buckets != self.handler_buckets:
            raise ValueError(ERR_SHARED_BUCKETS)

    # -- writers (event loop) --------------------------------------------------------------------
    def inc(self, name: str, key: Key, amount: float = 1) -> None:
        series = self.counters[name]
        value = series.get(key)
        if value is None:
            if len(series) >= self.limit:
                self.registry.count_overflow(name)
                key = (OVERFLOW,) * len(key)
            value = series.get(key, 0)
        series[key] = value + amount

    def observe_handler(self, key: Key, seconds: float) -> None:
        hist = self.handler.get(key)
        if hist is None:
            if len(self.handler) >= self.limit:
                self.registry.count_overflow("socketio_handler_duration_seconds")
                key = (OVERFLOW, OVERFLOW)
            hist = self.handler.get(key)
            if hist is None:
                hist = self.handler[key] = self._histogram(
                    "socketio_handler_duration_seconds",
                    self.handler_buckets or LATENCY_BUCKETS,
                    key,
                )
        hist.observe(seconds)

    # -- scrape time -----------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        f = self.families()
        for name in _COUNTERS:
            family = f[name]
            for key, value in list(self.counters[name].items()):
                family.add_metric(key, value)
        handler = f["socketio_handler_duration_seconds"]
        for key, hist in list(self.handler.items()):
            add_histogram(handler, list(key), hist)
        for name, hist in (
            ("socketio_batch_items", self.batch_items),
            ("socketio_batch_wait_seconds", self.batch_wait),
        ):
            buckets, total, _ = hist.cumulative()
            f[name].add_metric((), buckets, total)
        self._gauges(f)
        return iter(f.values())

    def _gauges(self, f: dict[str, Any]) -> None:
        # A figure one server cannot give is left out entirely: a sum missing a server is wrong.
        counts: dict[tuple[str, str], int] | None = {}
        depths: list[int] | None = []
        for server in list(self.servers):  # ServerState
            counts = _merge_counts(self.registry, server, counts)
            depths = _merge_depths(self.registry, server, depths)
        if counts is not None:
            for key, n in sorted(counts.items()):
                f["socketio_connections"].add_metric(key, n)
        if depths is not None:
            f["socketio_queue_depth_max"].add_metric((), max(depths, default=0))
            f["socketio_queued_packets"].add_metric((), sum(depths))
        f["socketio_batch_pending"].add_metric((), sum(b.pending for b in list(self.batchers)))


#: The registry's Socket.IO series, shared by every hook and batcher on it.
SOCKETIO_STATS: ComponentKey[SocketIOStats] = ComponentKey("socketio")


def _merge_counts(
    reg: PerfRegistry, server: ServerState, counts: dict[tuple[str, str], int] | None
) -> dict[tuple[str, str], int] | None:
    if counts is None:
        return None
    try:
        found = server.connections()
        if found is None:
            return None
        for namespace, transport, n in list(found):
            counts[namespace, transport] = counts.get((namespace, transport), 0) + n
    except Exception as exc:  # noqa: BLE001 - a scrape must not fail on one server
        reg.report_error("socketio", exc)
        return None
    return counts


def _merge_depths(
    reg: PerfRegistry, server: ServerState, depths: list[int] | None
) -> list[int] | None:
    if depths is None:
        return None
    try:
        found = server.queue_depths()
        if found is None:
            return None
        depths.extend(list(found))
    except Exception as exc:  # noqa: BLE001 - a scrape must not fail on one server
        reg.report_error("socketio", exc)
        return None
    return depths


def socketio_stats(registry: PerfRegistry) -> SocketIOStats:
    """The registry's one :class:`SocketIOStats`, created and registered on first use."""
    created = False

    def make() -> SocketIOStats:
        nonlocal created
        created = True
        return SocketIOStats(registry)

    stats = registry.component(SOCKETIO_STATS, make)
    if created:
        registry.register(stats)
    return stats


__all__ = ["ServerState", "SocketIOStats", "socketio_stats"]

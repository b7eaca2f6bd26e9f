"""The HTTP series store: plain counters on the event-loop thread, exported at scrape time."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import Metric

from .._exemplars import ExemplarSource
from .._histogram import PlainHistogram, bucket_labels
from .._labels import OVERFLOW, STANDARD_METHODS
from .._shared import SharedStore
from ..registry import CatalogueCollector, ComponentKey, PerfRegistry

ERR_SHARED_BUCKETS = (
    "this registry already records HTTP metrics with other buckets; "
    "use one bucket configuration per registry"
)


class _RouteSeries:
    """Everything recorded for one (method, route): per-status durations, TTFB, sizes."""

    __slots__ = ("by_status", "request_bytes", "response_bytes", "ttfb")

    def __init__(self, stats: HttpStats) -> None:
        self.by_status: dict[str, PlainHistogram] = {}
        self.ttfb = PlainHistogram(stats.ttfb_buckets)
        # Body sizes are summaries (count + sum): the count is the request count, so only the
        # sums are stored. A size distribution is rarely read and its bucket search per
        # request cost more than the rest of the recording together.
        self.request_bytes = 0
        self.response_bytes = 0


class HttpStats(CatalogueCollector):
    """Shared by every :class:`~asgi_perf.PerfMiddleware` on one registry.

    Writers are the event-loop thread(s); the collector reads copies. ``http_requests_total`` is not
    stored separately: it is each duration histogram's count, so the two can never disagree.
    """

    metrics = (
        "http_requests_total",
        "http_request_duration_seconds",
        "http_request_ttfb_seconds",
        "http_requests_in_progress",
        "http_request_size_bytes",
        "http_response_size_bytes",
        "http_exceptions_total",
    )

    def __init__(
        self,
        registry: PerfRegistry,
        duration_buckets: tuple[float, ...],
        ttfb_buckets: tuple[float, ...],
    ) -> None:
        super().__init__(registry)
        self.duration_buckets = duration_buckets
        self.ttfb_buckets = ttfb_buckets
        self.limit = registry.max_series_per_metric
        # route -> method -> series: two string-keyed lookups, no tuple built per request.
        self.routes: dict[str, dict[str, _RouteSeries]] = {}
        self.series_count = 0  # (method, route, status) duration series
        self.in_progress: dict[str, int] = dict.fromkeys(sorted(STANDARD_METHODS), 0)
        self.in_progress["OTHER"] = 0
        self.exceptions: dict[tuple[str, str, str], int] = {}

    def check_buckets(self, duration: tuple[float, ...], ttfb: tuple[float, ...]) -> None:
        if (duration, ttfb) != (self.duration_buckets, self.ttfb_buckets):
            raise ValueError(ERR_SHARED_BUCKETS)

    def record(
        self,
        method: str,
        route: str,
        status: str,
        duration: float,
        ttfb: float | None,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        by_method = self.routes.get(route)
        series = by_method.get(method) if by_method is not None else None
        if series is None:
            series, route = self._new_series(method, route)
        hist = series.by_status.get(status)
        if hist is None:
            hist = self._new_status(series, route, status)
        # PlainHistogram.observe, inlined: a method call per observation would cost more than the
        # observation itself on this path.
        hist.counts[bisect_left(hist.bounds, duration)] += 1
        hist.sum += duration
        if ttfb is not None:
            h = series.ttfb
            h.counts[bisect_left(h.bounds, ttfb)] += 1
            h.sum += ttfb
        series.request_bytes += request_bytes
        series.response_bytes += response_bytes

    def _new_series(self, method: str, route: str) -> tuple[_RouteSeries, str]:
        if self.series_count >= self.limit and route != OVERFLOW:
            self.registry.count_overflow("http_request_duration_seconds")
            route = OVERFLOW
        by_method = self.routes.setdefault(route, {})
        series = by_method.get(method)
        if series is None:
            series = by_method[method] = _RouteSeries(self)
        return series, route

    def _new_status(self, series: _RouteSeries, route: str, status: str) -> PlainHistogram:
        if self.series_count >= self.limit and route != OVERFLOW:
            # The (method, route) exists but a new status would pass the cap: keep the route,
            # fold the status. Bounded: at most one extra series per (method, route).
            self.registry.count_overflow("http_request_duration_seconds")
            status = OVERFLOW
            hist = series.by_status.get(status)
            if hist is not None:
                return hist
        hist = series.by_status[status] = PlainHistogram(self.duration_buckets)
        self.series_count += 1
        return hist

    def record_exception(self, method: str, route: str, exception: str) -> None:
        key = (method, route, exception)
        if key not in self.exceptions and len(self.exceptions) >= self.limit:
            self.registry.count_overflow("http_exceptions_total")
            key = (method, route, OVERFLOW)
        self.exceptions[key] = self.exceptions.get(key, 0) + 1

    # -- scrape time -----------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        f = self.families()
        requests = f["http_requests_total"]
        duration = f["http_request_duration_seconds"]
        ttfb = f["http_request_ttfb_seconds"]
        req_size = f["http_request_size_bytes"]
        resp_size = f["http_response_size_bytes"]
        for route, by_method in list(self.routes.items()):
            for method, series in list(by_method.items()):
                served = 0
                for status, hist in list(series.by_status.items()):
                    buckets, total, count = hist.exported()
                    served += count
                    labels = [method, route, status]
                    requests.add_metric(labels, count)
                    duration.add_metric(labels, buckets, total)
                req_size.add_metric([method, route], served, series.request_bytes)
                resp_size.add_metric([method, route], served, series.response_bytes)
                buckets, total, count = series.ttfb.cumulative()
                if count:
                    ttfb.add_metric([method, route], buckets, total)
        for method, value in list(self.in_progress.items()):
            f["http_requests_in_progress"].add_metric([method], value)
        for key, value in list(self.exceptions.items()):
            f["http_exceptions_total"].add_metric(list(key), value)
        return iter(f.values())


class ExemplarHttpStats(HttpStats):
    """:class:`HttpStats` for a registry with an exemplar source: each request asks it once,
    and a request it gives labels to leaves them on its duration bucket.

    Chosen at construction, so a registry without a source runs the plain ``record``.
    """

    def __init__(
        self,
        registry: PerfRegistry,
        duration_buckets: tuple[float, ...],
        ttfb_buckets: tuple[float, ...],
        source: ExemplarSource,
    ) -> None:
        super().__init__(registry, duration_buckets, ttfb_buckets)
        self._source = source

    def record(
        self,
        method: str,
        route: str,
        status: str,
        duration: float,
        ttfb: float | None,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        labels = self._source()
        HttpStats.record(self, method, route, status, duration, ttfb, request_bytes, response_bytes)
        if labels is not None:
            # The series exists now; a route or status folded by the cap is found under the
            # overflow value, as record() put it there.
            by_method = self.routes.get(route)
            series = by_method.get(method) if by_method is not None else None
            if series is None:
                series = self.routes[OVERFLOW][method]
            hist = series.by_status.get(status) or series.by_status[OVERFLOW]
            hist.put_exemplar(duration, labels)


#: The registry's HTTP series, shared by every middleware on it.
HTTP_STATS: ComponentKey[HttpStats] = ComponentKey("http")


class _SharedRouteSeries:
    """One (method, route) in shared memory: the first slot of each of its series."""

    __slots__ = ("by_status", "request_bytes", "response_bytes", "ttfb")

    def __init__(self, request_bytes: int, response_bytes: int) -> None:
        self.by_status: dict[str, int] = {}
        self.ttfb = -1  # allocated with the first TTFB observed
        self.request_bytes = request_bytes
        self.response_bytes = response_bytes


class SharedHttpStats(HttpStats):
    """:class:`HttpStats` for multi-worker mode: the counters and histograms live in the worker's
    shared-memory file (:mod:`asgi_perf._shared`), so any worker's scrape reads them exactly.

    Chosen at construction when the registry has a shared store; the single-process class is
    untouched. ``http_requests_total`` is still each duration histogram's count: the index line
    names it as derived, so a reader never sees the two disagree.
    """

    def __init__(
        self,
        registry: PerfRegistry,
        duration_buckets: tuple[float, ...],
        ttfb_buckets: tuple[float, ...],
        store: SharedStore,
    ) -> None:
        super().__init__(registry, duration_buckets, ttfb_buckets)
        self.store = store
        self.shared_routes: dict[str, dict[str, _SharedRouteSeries]] = {}
        self.exception_slots: dict[tuple[str, str, str], int] = {}
        self._duration_sum = len(duration_buckets) + 1
        self._ttfb_sum = len(ttfb_buckets) + 1
        name = registry.metric_name
        self._names = {m: name(m) for m in self.metrics}
        self._names["http_exceptions_total"] = name("http_exceptions_total").removesuffix("_total")
        registry.shared_families.update(
            self._names[m]
            for m in self.metrics
            if m not in ("http_requests_in_progress", "http_requests_total")
        )
        registry.shared_families.add(name("http_requests_total").removesuffix("_total"))

    def _allocate(
        self,
        metric: str,
        kind: str,
        labels: list[tuple[str, str]],
        bounds: tuple[float, ...] = (),
        derived: str = "",
    ) -> int:
        spec = self.registry.spec(metric)
        also: tuple[str, ...] = ()
        if derived:
            also = (self._names[derived].removesuffix("_total"), self.registry.spec(derived).help)
        return self.store.allocate(self._names[metric], kind, spec.help, labels, bounds, also)

    def record(
        self,
        method: str,
        route: str,
        status: str,
        duration: float,
        ttfb: float | None,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        by_method = self.shared_routes.get(route)
        series = by_method.get(method) if by_method is not None else None
        if series is None:
            series, route = self._new_shared_series(method, route)
        slot = series.by_status.get(status)
        if slot is None:
            slot = self._new_shared_status(series, method, route, status)
        values: Any = self.store.values
        values[slot + bisect_left(self.duration_buckets, duration)] += 1
        values[slot + self._duration_sum] += duration
        if ttfb is not None:
            slot = series.ttfb
            if slot < 0:
                slot = series.ttfb = self._allocate(
                    "http_request_ttfb_seconds",
                    "histogram",
                    [("method", method), ("route", route)],
                    self.ttfb_buckets,
                )
            values[slot + bisect_left(self.ttfb_buckets, ttfb)] += 1
            values[slot + self._ttfb_sum] += ttfb
        slot = series.request_bytes
        values[slot] += 1
        values[slot + 1] += request_bytes
        slot = series.response_bytes
        values[slot] += 1
        values[slot + 1] += response_bytes

    def _new_shared_series(self, method: str, route: str) -> tuple[_SharedRouteSeries, str]:
        if self.series_count >= self.limit and route != OVERFLOW:
            self.registry.count_overflow("http_request_duration_seconds")
            route = OVERFLOW
        by_method = self.shared_routes.setdefault(route, {})
        series = by_method.get(method)
        if series is None:
            labels = [("method", method), ("route", route)]
            series = by_method[method] = _SharedRouteSeries(
                self._allocate("http_request_size_bytes", "summary", labels),
                self._allocate("http_response_size_bytes", "summary", labels),
            )
        return series, route

    def _new_shared_status(
        self, series: _SharedRouteSeries, method: str, route: str, status: str
    ) -> int:
        if self.series_count >= self.limit and route != OVERFLOW:
            self.registry.count_overflow("http_request_duration_seconds")
            status = OVERFLOW
            slot = series.by_status.get(status)
            if slot is not None:
                return slot
        slot = series.by_status[status] = self._allocate(
            "http_request_duration_seconds",
            "histogram",
            [("method", method), ("route", route), ("status", status)],
            self.duration_buckets,
            derived="http_requests_total",
        )
        self.series_count += 1
        return slot

    def record_exception(self, method: str, route: str, exception: str) -> None:
        key = (method, route, exception)
        slot = self.exception_slots.get(key)
        if slot is None:
            if len(self.exception_slots) >= self.limit:
                self.registry.count_overflow("http_exceptions_total")
                key = (method, route, OVERFLOW)
            slot = self.exception_slots.get(key)
            if slot is None:
                slot = self.exception_slots[key] = self._allocate(
                    "http_exceptions_total",
                    "counter",
                    list(zip(("method", "route", "exception"), key, strict=True)),
                )
        self.store.values[slot] += 1

    # -- scrape time: this worker's own view (the merged view reads every worker's files) --------
    def collect(self) -> Iterator[Metric]:
        f = self.families()
        values = self.store.values
        for route, by_method in list(self.shared_routes.items()):
            for method, series in list(by_method.items()):
                for status, slot in list(series.by_status.items()):
                    buckets, total, count = _cumulative(values, slot, self.duration_buckets)
                    labels = [method, route, status]
                    f["http_requests_total"].add_metric(labels, count)
                    f["http_request_duration_seconds"].add_metric(labels, buckets, total)
                for name, slot in (
                    ("http_request_size_bytes", series.request_bytes),
                    ("http_response_size_bytes", series.response_bytes),
                ):
                    f[name].add_metric([method, route], values[slot], values[slot + 1])
                if series.ttfb >= 0:
                    buckets, total, count = _cumulative(values, series.ttfb, self.ttfb_buckets)
                    f["http_request_ttfb_seconds"].add_metric([method, route], buckets, total)
        for method, value in list(self.in_progress.items()):
            f["http_requests_in_progress"].add_metric([method], value)
        for key, slot in list(self.exception_slots.items()):
            f["http_exceptions_total"].add_metric(list(key), values[slot])
        return iter(f.values())


class ExemplarSharedHttpStats(SharedHttpStats):
    """:class:`SharedHttpStats` for a registry with an exemplar source: the counts go to shared
    memory, the exemplar to this worker's :class:`~asgi_perf._exemplars.WorkerExemplars`, which
    the merged view this worker serves carries."""

    def __init__(
        self,
        registry: PerfRegistry,
        duration_buckets: tuple[float, ...],
        ttfb_buckets: tuple[float, ...],
        store: SharedStore,
        source: ExemplarSource,
    ) -> None:
        super().__init__(registry, duration_buckets, ttfb_buckets, store)
        self._source = source

    def record(
        self,
        method: str,
        route: str,
        status: str,
        duration: float,
        ttfb: float | None,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        labels = self._source()
        SharedHttpStats.record(
            self, method, route, status, duration, ttfb, request_bytes, response_bytes
        )
        if labels is not None:
            by_method = self.shared_routes.get(route)
            if by_method is None or method not in by_method:
                route = OVERFLOW
                by_method = self.shared_routes[OVERFLOW]
            if status not in by_method[method].by_status:
                status = OVERFLOW
            self.registry.worker_exemplars.put(
                self._names["http_request_duration_seconds"],
                (("method", method), ("route", route), ("status", status)),
                self.duration_buckets,
                duration,
                labels,
            )


def _cumulative(
    values: Any, slot: int, bounds: tuple[float, ...]
) -> tuple[list[tuple[str, float]], float, float]:
    """``([(le, cumulative count), ...], sum, count)`` of the histogram at ``slot``."""
    out: list[tuple[str, float]] = []
    running = 0.0
    for i, label in enumerate(bucket_labels(bounds)):
        running += values[slot + i]
        out.append((label, running))
    running += values[slot + len(bounds)]
    out.append(("+Inf", running))
    return out, float(values[slot + len(bounds) + 1]), running

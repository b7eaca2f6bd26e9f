"""The HTTP series store: plain counters on the event-loop thread, exported at scrape time."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.metrics_core import Metric

from .._histogram import PlainHistogram
from .._labels import OVERFLOW, STANDARD_METHODS
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
                    buckets, total, count = hist.cumulative()
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


#: The registry's HTTP series, shared by every middleware on it.
HTTP_STATS: ComponentKey[HttpStats] = ComponentKey("http")

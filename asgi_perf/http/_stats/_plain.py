"""The per-process HTTP series store: plain counters on the event-loop thread, exported at scrape
time.

:class:`HttpStats` is the store every other one builds on (its series keys, extra labels, series
caps and rows); :class:`HighrHttpStats` adds the label-less high-resolution histogram.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Container
from itertools import accumulate
from typing import Any, ClassVar, NamedTuple

from ..._histogram import PlainHistogram
from ..._labels import OTHER_METHOD, OVERFLOW, STANDARD_METHODS
from ..._rows import FamilyRows
from ...compat import HIGHR_METRIC
from ...registry import CatalogueCollector, ComponentKey, PerfRegistry

ERR_SHARED_BUCKETS = (
    "this registry already records HTTP metrics with other buckets; "
    "use one bucket configuration per registry"
)
ERR_SHARED_LABELS = (
    "this registry already records HTTP metrics with other extra labels ({} there, {} here); "
    "use one labels= / label_from= configuration per registry"
)
#: Joins a route and its ``label_from`` values into one series key (never in a label value).
_KEY_SEP = "\x00"


class ExtraLabels(NamedTuple):
    """Labels added to every HTTP series besides method, route and status."""

    constant: tuple[tuple[str, str], ...] = ()  # (name, value): the same on every series
    dynamic: tuple[str, ...] = ()  # names of the label_from labels, in order

    def names(self) -> tuple[str, ...]:
        return (*(name for name, _ in self.constant), *self.dynamic)


NO_EXTRA_LABELS = ExtraLabels()


class InFlight:
    """One method's requests in progress. The middleware looks the method's up once per request
    and counts on it: two attribute updates, where a dict by method label cost two lookups and
    two stores."""

    __slots__ = ("count", "method")

    def __init__(self, method: str) -> None:
        self.method = method
        self.count = 0


class _RouteSeries:
    """Everything recorded for one (method, route): per-status durations, TTFB, sizes."""

    __slots__ = ("by_status", "request_bytes", "response_bytes", "ttfb")

    def __init__(self, stats: HttpStats) -> None:
        self.by_status: dict[str, PlainHistogram] = {}
        self.ttfb = stats.new_histogram(stats.ttfb_buckets)
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

    #: Whether the duration buckets keep exemplars (set by :func:`keep_exemplars`).
    keeps_exemplars: ClassVar[bool] = False

    metrics: ClassVar[tuple[str, ...]] = (
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
        labels: ExtraLabels = NO_EXTRA_LABELS,
    ) -> None:
        super().__init__(registry)
        self.duration_buckets = duration_buckets
        self.ttfb_buckets = ttfb_buckets
        self.labels = labels
        self._constant_values = tuple(value for _, value in labels.constant)
        # Series key -> (route, label_from values): a key is the route itself without label_from.
        self._keys: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._overflow_values = (OVERFLOW,) * len(labels.dynamic)
        self.limit = registry.max_series_per_metric
        # route -> method -> series: two string-keyed lookups, no tuple built per request.
        self.routes: dict[str, dict[str, _RouteSeries]] = {}
        self.series_count = 0  # (method, route, status) duration series
        #: Requests in progress, by the scope's method (a standard one); anything else is
        #: ``other_flight``'s.
        self.flights: dict[object, InFlight] = {m: InFlight(m) for m in sorted(STANDARD_METHODS)}
        self.other_flight = InFlight(OTHER_METHOD)
        self.exceptions: dict[tuple[str, str, str], int] = {}

    @property
    def in_progress(self) -> dict[str, int]:
        """Requests in progress by method label, standard methods first, then ``OTHER``."""
        counts = {flight.method: flight.count for flight in list(self.flights.values())}
        counts[OTHER_METHOD] = self.other_flight.count
        return counts

    def new_histogram(self, bounds: tuple[float, ...]) -> PlainHistogram:
        return PlainHistogram(bounds)

    def check_buckets(self, duration: tuple[float, ...], ttfb: tuple[float, ...]) -> None:
        if (duration, ttfb) != (self.duration_buckets, self.ttfb_buckets):
            raise ValueError(ERR_SHARED_BUCKETS)

    def check_labels(self, labels: ExtraLabels) -> None:
        if labels != self.labels:
            raise ValueError(ERR_SHARED_LABELS.format(self.labels.names(), labels.names()))

    # -- extra labels: resolved off the common path, expanded at scrape time -----------------------
    def series_key(self, route: str, values: tuple[str, ...]) -> str:
        """The key :meth:`record` files a route under with these ``label_from`` values."""
        key = _KEY_SEP.join((route, *values))
        if key not in self._keys:
            if len(self._keys) >= self.limit:
                self.registry.count_overflow("http_request_duration_seconds")
                return OVERFLOW
            self._keys[key] = (route, values)
        return key

    def expand(self, key: str) -> tuple[str, tuple[str, ...]]:
        """``(route, extra label values)`` of a series key, constant labels included."""
        found = self._keys.get(key)
        if found is None:  # a plain route, or the overflow series
            return key, (*self._constant_values, *self._overflow_values)
        return found[0], (*self._constant_values, *found[1])

    def families(self) -> dict[str, Any]:
        if not (self.labels.constant or self.labels.dynamic):
            return super().families()
        names = self.labels.names()
        constant = tuple(name for name, _ in self.labels.constant)
        return {
            metric: self.registry.family(
                metric,
                ()
                if metric == HIGHR_METRIC  # label-less by definition
                else constant
                if metric == "http_requests_in_progress"
                else names,
            )
            for metric in self.metrics
        }

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
        # Subscripts in a try, not .get(): no method calls on the path every request takes.
        try:
            series = self.routes[route][method]
            hist = series.by_status[status]
        except KeyError:
            series, hist = self._new(method, route, status)
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

    def _new(self, method: str, route: str, status: str) -> tuple[_RouteSeries, PlainHistogram]:
        by_method = self.routes.get(route)
        series = by_method.get(method) if by_method is not None else None
        if series is None:
            series, route = self._new_series(method, route)
        hist = series.by_status.get(status)
        if hist is None:
            hist = self._new_status(series, route, status)
        return series, hist

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
        hist = series.by_status[status] = self.new_histogram(self.duration_buckets)
        self.series_count += 1
        return hist

    def record_exception(self, method: str, route: str, exception: str) -> None:
        key = (method, route, exception)
        if key not in self.exceptions and len(self.exceptions) >= self.limit:
            self.registry.count_overflow("http_exceptions_total")
            key = (method, route, OVERFLOW)
        self.exceptions[key] = self.exceptions.get(key, 0) + 1

    # -- scrape time -----------------------------------------------------------------------------
    def rows(self, skip: Container[str] = frozenset()) -> list[FamilyRows]:
        names = self.labels.names()
        constant = tuple(name for name, _ in self.labels.constant)
        out = {
            "http_requests_total": FamilyRows("http_requests_total", "counter", extra_labels=names),
            "http_request_duration_seconds": FamilyRows(
                "http_request_duration_seconds",
                "histogram",
                bounds=self.duration_buckets,
                extra_labels=names,
            ),
            "http_request_ttfb_seconds": FamilyRows(
                "http_request_ttfb_seconds",
                "histogram",
                bounds=self.ttfb_buckets,
                extra_labels=names,
            ),
            "http_requests_in_progress": FamilyRows(
                "http_requests_in_progress", "gauge", extra_labels=constant
            ),
            "http_request_size_bytes": FamilyRows(
                "http_request_size_bytes", "summary", extra_labels=names
            ),
            "http_response_size_bytes": FamilyRows(
                "http_response_size_bytes", "summary", extra_labels=names
            ),
            "http_exceptions_total": FamilyRows(
                "http_exceptions_total", "counter", extra_labels=names
            ),
        }
        if any(name not in skip for name in _PER_ROUTE):
            self._route_rows(*(out[name].rows for name in _PER_ROUTE))
        if self.keeps_exemplars and "http_request_duration_seconds" not in skip:
            self._exemplar_rows(out["http_request_duration_seconds"].exemplars)
        values = self._constant_values
        out["http_requests_in_progress"].rows = [
            ((method, *values), value) for method, value in list(self.in_progress.items())
        ]
        out["http_exceptions_total"].rows = self._exception_rows()
        return [family for name, family in out.items() if name not in skip]

    def _exemplar_rows(self, out: dict[tuple[str, ...], list[Any]]) -> None:
        """The duration buckets' exemplars, by the rows' label values (series that have any)."""
        for key, by_method in list(self.routes.items()):
            route, extra = self.expand(key)
            for method, series in list(by_method.items()):
                for status, hist in list(series.by_status.items()):
                    exemplars = hist.exemplars
                    if exemplars is not None:
                        labels = (method, route, status, *extra)
                        out[labels] = list(exemplars)

    def _route_rows(
        self, requests: _Rows, duration: _Rows, ttfb: _Rows, req: _Rows, resp: _Rows
    ) -> None:
        for key, by_method in list(self.routes.items()):
            route, extra = self.expand(key)
            for method, series in list(by_method.items()):
                served = 0
                for status, hist in list(series.by_status.items()):
                    # One copy of the counts, then the sum: as PlainHistogram.cumulative().
                    cumulative = list(accumulate(list(hist.counts)))
                    count = cumulative[-1]
                    served += count
                    labels = (method, route, status, *extra)
                    requests.append((labels, count))
                    duration.append((labels, (cumulative, hist.sum)))
                labels = (method, route, *extra)
                req.append((labels, (served, series.request_bytes)))
                resp.append((labels, (served, series.response_bytes)))
                h = series.ttfb
                cumulative = list(accumulate(list(h.counts)))
                if cumulative[-1]:
                    ttfb.append((labels, (cumulative, h.sum)))

    def _exception_rows(self) -> _Rows:
        rows: _Rows = []
        for (method, key, exception), value in list(self.exceptions.items()):
            route, extra = self.expand(key)
            rows.append(((method, route, exception, *extra), value))
        return rows


_Rows = list[tuple[tuple[str, ...], Any]]
#: The families with one series per (method, route[, status]): what scales with the routes.
_PER_ROUTE = (
    "http_requests_total",
    "http_request_duration_seconds",
    "http_request_ttfb_seconds",
    "http_request_size_bytes",
    "http_response_size_bytes",
)


#: The registry's HTTP series, shared by every middleware on it.
HTTP_STATS: ComponentKey[HttpStats] = ComponentKey("http")


class _Highr(HttpStats):
    """The label-less high-resolution duration histogram, in process, on top of a store class
    (plain, or native listed after this one), so ``record`` runs the store's, then one more
    bucket search."""

    highr: PlainHistogram

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
        super().record(method, route, status, duration, ttfb, request_bytes, response_bytes)
        h = self.highr
        h.counts[bisect_left(h.bounds, duration)] += 1
        h.sum += duration


class HighrHttpStats(_Highr):
    """:class:`HttpStats` that also records the label-less high-resolution duration histogram
    (prometheus-fastapi-instrumentator's ``http_request_duration_highr_seconds``).

    Chosen at construction when the registry's compat setting asks for it, so the request path of
    everyone else is untouched; here it costs one more bucket search per request.
    """

    metrics = (*HttpStats.metrics, HIGHR_METRIC)

    def __init__(
        self,
        registry: PerfRegistry,
        duration_buckets: tuple[float, ...],
        ttfb_buckets: tuple[float, ...],
        highr_buckets: tuple[float, ...],
        labels: ExtraLabels = NO_EXTRA_LABELS,
    ) -> None:
        super().__init__(registry, duration_buckets, ttfb_buckets, labels)
        self.highr = PlainHistogram(highr_buckets)

    def rows(self, skip: Container[str] = frozenset()) -> list[FamilyRows]:
        out = super().rows(skip)
        if HIGHR_METRIC not in skip:
            h = self.highr
            cumulative = list(accumulate(list(h.counts)))
            out.append(FamilyRows(HIGHR_METRIC, "histogram", [((), (cumulative, h.sum))], h.bounds))
        return out

"""The HTTP series store: plain counters on the event-loop thread, exported at scrape time."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Container, Iterator
from itertools import accumulate
from typing import Any, ClassVar, NamedTuple

from prometheus_client.metrics_core import Metric

from .._exemplars import ExemplarSource, span_gate
from .._histogram import PlainHistogram
from .._labels import OTHER_METHOD, OVERFLOW, STANDARD_METHODS
from .._native import NativeHistograms
from .._native_snapshots import add_histogram
from .._rows import FamilyRows, current_request
from .._shared import HISTOGRAM, SharedStore
from .._shared import expand as expand_slots
from .._shared_native import SharedNativeHistogram
from ..compat import HIGHR_METRIC
from ..registry import CatalogueCollector, ComponentKey, PerfRegistry

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


class ExemplarHttpStats(HttpStats):
    """:class:`HttpStats` whose duration buckets keep exemplars: the plain store with an exemplar
    source, the default wherever ``opentelemetry-api`` is installed.

    ``record`` asks the source once per request and puts the labels on the bucket it has just
    counted: the same as :func:`keep_exemplars` does for the other stores, without a second call
    and a second lookup of the series on every request.
    """

    keeps_exemplars = True

    def __init__(
        self,
        registry: PerfRegistry,
        duration_buckets: tuple[float, ...],
        ttfb_buckets: tuple[float, ...],
        labels: ExtraLabels,
        source: ExemplarSource,
    ) -> None:
        super().__init__(registry, duration_buckets, ttfb_buckets, labels)
        self._source = source
        self._span_context, self._span_key = span_gate(source)

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
        try:
            series = self.routes[route][method]
            hist = series.by_status[status]
        except KeyError:
            series, hist = self._new(method, route, status)
        hist.counts[bisect_left(hist.bounds, duration)] += 1
        hist.sum += duration
        if ttfb is not None:
            h = series.ttfb
            h.counts[bisect_left(h.bounds, ttfb)] += 1
            h.sum += ttfb
        series.request_bytes += request_bytes
        series.response_bytes += response_bytes
        context = self._span_context
        if context is None or context().get(self._span_key) is not None:
            labels = self._source()
            if labels is not None:
                hist.put_exemplar(duration, labels)


class NativeHttpStats(HttpStats):
    """:class:`HttpStats` whose duration and TTFB histograms also keep native buckets
    (``PerfRegistry(native_histograms=...)``); chosen at construction, so the classic-only
    request path is untouched."""

    def __init__(
        self,
        registry: PerfRegistry,
        duration_buckets: tuple[float, ...],
        ttfb_buckets: tuple[float, ...],
        native: NativeHistograms,
        labels: ExtraLabels = NO_EXTRA_LABELS,
    ) -> None:
        self.native = native
        super().__init__(registry, duration_buckets, ttfb_buckets, labels)

    def new_histogram(self, bounds: tuple[float, ...]) -> PlainHistogram:
        return self.native.histogram(bounds)

    @classmethod
    def has_rows(cls) -> bool:
        # Native buckets travel on the families (for the protobuf encoder), which rows do not
        # carry: this store is read through collect().
        return False

    def collect(self) -> Iterator[Metric]:
        f = self.families()
        requests = f["http_requests_total"]
        duration = f["http_request_duration_seconds"]
        ttfb = f["http_request_ttfb_seconds"]
        req_size = f["http_request_size_bytes"]
        resp_size = f["http_response_size_bytes"]
        for key, by_method in list(self.routes.items()):
            route, extra = self.expand(key)
            for method, series in list(by_method.items()):
                served = 0
                for status, hist in list(series.by_status.items()):
                    labels = [method, route, status, *extra]
                    count = add_histogram(duration, labels, hist)
                    served += count
                    requests.add_metric(labels, count)
                req_size.add_metric([method, route, *extra], served, series.request_bytes)
                resp_size.add_metric([method, route, *extra], served, series.response_bytes)
                if series.ttfb.count:
                    add_histogram(ttfb, [method, route, *extra], series.ttfb)
        for method, value in list(self.in_progress.items()):
            f["http_requests_in_progress"].add_metric([method, *self._constant_values], value)
        for (method, key, exception), value in list(self.exceptions.items()):
            route, extra = self.expand(key)
            f["http_exceptions_total"].add_metric([method, route, exception, *extra], value)
        return iter(f.values())

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
        try:
            series = self.routes[route][method]
            hist = series.by_status[status]
        except KeyError:
            series, hist = self._new(method, route, status)
        hist.observe(duration)
        if ttfb is not None:
            series.ttfb.observe(ttfb)
        series.request_bytes += request_bytes
        series.response_bytes += response_bytes


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
        labels: ExtraLabels = NO_EXTRA_LABELS,
    ) -> None:
        super().__init__(registry, duration_buckets, ttfb_buckets, labels)
        self.store = store
        #: The classic bounds the duration series keep (their exemplars' buckets).
        self.exemplar_bounds = duration_buckets
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

    def _labelled(
        self, head: list[tuple[str, str]], key: str, tail: tuple[tuple[str, str], ...] = ()
    ) -> list[tuple[str, str]]:
        """Label pairs of a shared series: ``head``, the route (and extra labels) of ``key``,
        ``tail``."""
        route, extra = self.expand(key)
        return [*head, ("route", route), *tail, *zip(self.labels.names(), extra, strict=True)]

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
        try:
            series = self.shared_routes[route][method]
            slot = series.by_status[status]
        except KeyError:
            series, slot = self._new_shared(method, route, status)
        values: Any = self.store.values
        values[slot + bisect_left(self.duration_buckets, duration)] += 1
        values[slot + self._duration_sum] += duration
        if ttfb is not None:
            slot = series.ttfb
            if slot < 0:
                slot = series.ttfb = self._allocate(
                    "http_request_ttfb_seconds",
                    "histogram",
                    self._labelled([("method", method)], route),
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

    def _new_shared(self, method: str, route: str, status: str) -> tuple[_SharedRouteSeries, int]:
        by_method = self.shared_routes.get(route)
        series = by_method.get(method) if by_method is not None else None
        if series is None:
            series, route = self._new_shared_series(method, route)
        slot = series.by_status.get(status)
        if slot is None:
            slot = self._new_shared_status(series, method, route, status)
        return series, slot

    def _new_shared_series(self, method: str, route: str) -> tuple[_SharedRouteSeries, str]:
        if self.series_count >= self.limit and route != OVERFLOW:
            self.registry.count_overflow("http_request_duration_seconds")
            route = OVERFLOW
        by_method = self.shared_routes.setdefault(route, {})
        series = by_method.get(method)
        if series is None:
            series = by_method[method] = self._route_series(method, route)
        return series, route

    def _route_series(self, method: str, route: str) -> _SharedRouteSeries:
        labels = self._labelled([("method", method)], route)
        return _SharedRouteSeries(
            self._allocate("http_request_size_bytes", "summary", labels),
            self._allocate("http_response_size_bytes", "summary", labels),
        )

    def _new_shared_status(
        self, series: _SharedRouteSeries, method: str, route: str, status: str
    ) -> int:
        if self.series_count >= self.limit and route != OVERFLOW:
            self.registry.count_overflow("http_request_duration_seconds")
            status = OVERFLOW
            slot = series.by_status.get(status)
            if slot is not None:
                return slot
        slot = series.by_status[status] = self._duration_series(series, method, route, status)
        self.series_count += 1
        return slot

    def _duration_series(
        self, series: _SharedRouteSeries, method: str, route: str, status: str
    ) -> int:
        return self._allocate(
            "http_request_duration_seconds",
            "histogram",
            self._labelled([("method", method)], route, (("status", status),)),
            self.duration_buckets,
            derived="http_requests_total",
        )

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
                    self._labelled([("method", key[0])], key[1], (("exception", key[2]),)),
                )
        self.store.values[slot] += 1

    # -- scrape time: this worker's own view (the merged view reads every worker's files) --------
    def _route_rows(
        self, requests: _Rows, duration: _Rows, ttfb: _Rows, req: _Rows, resp: _Rows
    ) -> None:
        values = self.store.values
        n_duration = len(self.duration_buckets) + 1
        n_ttfb = len(self.ttfb_buckets) + 1
        for key, by_method in list(self.shared_routes.items()):
            route, extra = self.expand(key)
            for method, series in list(by_method.items()):
                for status, slot in list(series.by_status.items()):
                    cumulative = list(accumulate(values[slot : slot + n_duration]))
                    labels = (method, route, status, *extra)
                    requests.append((labels, cumulative[-1]))
                    duration.append((labels, (cumulative, float(values[slot + n_duration]))))
                labels = (method, route, *extra)
                slot = series.request_bytes
                req.append((labels, (values[slot], values[slot + 1])))
                slot = series.response_bytes
                resp.append((labels, (values[slot], values[slot + 1])))
                if series.ttfb >= 0:
                    slot = series.ttfb
                    cumulative = list(accumulate(values[slot : slot + n_ttfb]))
                    ttfb.append((labels, (cumulative, float(values[slot + n_ttfb]))))

    def _exception_rows(self) -> _Rows:
        values = self.store.values
        rows: _Rows = []
        for (method, key, exception), slot in list(self.exception_slots.items()):
            route, extra = self.expand(key)
            rows.append(((method, route, exception, *extra), values[slot]))
        return rows


class _NativeRouteSeries(_SharedRouteSeries):
    """One (method, route) of :class:`SharedNativeHttpStats`: its duration series by status and
    its TTFB series are native histograms in shared memory (``by_status`` holds their slots)."""

    __slots__ = ("histograms", "ttfb_histogram")

    def __init__(
        self, request_bytes: int, response_bytes: int, ttfb_histogram: SharedNativeHistogram
    ) -> None:
        super().__init__(request_bytes, response_bytes)
        self.histograms: dict[str, SharedNativeHistogram] = {}
        self.ttfb_histogram = ttfb_histogram


class SharedNativeHttpStats(SharedHttpStats):
    """:class:`SharedHttpStats` whose duration and TTFB histograms keep native buckets too:
    multi-worker mode with ``PerfRegistry(native_histograms=...)``. The body sizes, exceptions
    and in-progress gauges are :class:`SharedHttpStats`'; chosen at construction."""

    def __init__(
        self,
        registry: PerfRegistry,
        duration_buckets: tuple[float, ...],
        ttfb_buckets: tuple[float, ...],
        store: SharedStore,
        native: NativeHistograms,
        labels: ExtraLabels = NO_EXTRA_LABELS,
    ) -> None:
        super().__init__(registry, duration_buckets, ttfb_buckets, store, labels)
        self.native = native
        if not native.classic:
            self.exemplar_bounds = ()
        # The same series objects as ``shared_routes``, typed as what this class keeps in them.
        self.native_routes: dict[str, dict[str, _NativeRouteSeries]] = {}

    @classmethod
    def has_rows(cls) -> bool:
        # Native buckets travel on the families (the summary reads them there): collect().
        return False

    def _histogram(
        self, metric: str, labels: list[tuple[str, str]], bounds: tuple[float, ...], derived: str
    ) -> SharedNativeHistogram:
        count_as: tuple[str, ...] = ()
        if derived:
            count_as = (
                self._names[derived].removesuffix("_total"),
                self.registry.spec(derived).help,
            )
        return SharedNativeHistogram(
            bounds,
            self.store,
            self._names[metric],
            self.registry.spec(metric).help,
            labels,
            native=self.native,
            count_as=count_as,
        )

    def _route_series(self, method: str, route: str) -> _SharedRouteSeries:
        labels = self._labelled([("method", method)], route)
        series = _NativeRouteSeries(
            self._allocate("http_request_size_bytes", "summary", labels),
            self._allocate("http_response_size_bytes", "summary", labels),
            # Allocated with its first observation, as the classic TTFB series.
            self._histogram("http_request_ttfb_seconds", labels, self.ttfb_buckets, ""),
        )
        self.native_routes.setdefault(route, {})[method] = series
        return series

    def _duration_series(
        self, series: _SharedRouteSeries, method: str, route: str, status: str
    ) -> int:
        assert isinstance(series, _NativeRouteSeries)
        hist = self._histogram(
            "http_request_duration_seconds",
            self._labelled([("method", method)], route, (("status", status),)),
            self.duration_buckets,
            "http_requests_total",
        )
        slot = hist.allocate()
        series.histograms[status] = hist
        return slot

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
        try:
            series = self.native_routes[route][method]
            hist = series.histograms[status]
        except KeyError:
            series, hist = self._new_native(method, route, status)
        hist.observe(duration)
        if ttfb is not None:
            series.ttfb_histogram.observe(ttfb)
        values: Any = self.store.values
        slot = series.request_bytes
        values[slot] += 1
        values[slot + 1] += request_bytes
        slot = series.response_bytes
        values[slot] += 1
        values[slot + 1] += response_bytes

    def _new_native(
        self, method: str, route: str, status: str
    ) -> tuple[_NativeRouteSeries, SharedNativeHistogram]:
        found, _ = self._new_shared(method, route, status)
        # A route or status past the cap was filed under the overflow value.
        assert isinstance(found, _NativeRouteSeries)
        hist = found.histograms.get(status) or found.histograms[OVERFLOW]
        return found, hist

    def collect(self) -> Iterator[Metric]:
        """This worker's own view (the merged view reads every worker's files)."""
        f = self.families()
        requests = f["http_requests_total"]
        duration = f["http_request_duration_seconds"]
        ttfb = f["http_request_ttfb_seconds"]
        req_size = f["http_request_size_bytes"]
        resp_size = f["http_response_size_bytes"]
        values = self.store.values
        request = current_request()
        skip = request.skip if request is not None else ()
        # The publish of multi-worker mode skips what every scrape reads from shared memory:
        # building those series (a native snapshot each) only to drop them would cost more than
        # the publish itself.
        routes = self.native_routes if any(name not in skip for name in _PER_ROUTE) else {}
        for key, by_method in list(routes.items()):
            route, extra = self.expand(key)
            for method, series in list(by_method.items()):
                for status, hist in list(series.histograms.items()):
                    labels = [method, route, status, *extra]
                    requests.add_metric(labels, add_histogram(duration, labels, hist))
                slot = series.request_bytes
                req_size.add_metric([method, route, *extra], values[slot], values[slot + 1])
                slot = series.response_bytes
                resp_size.add_metric([method, route, *extra], values[slot], values[slot + 1])
                if series.ttfb_histogram.allocated:
                    add_histogram(ttfb, [method, route, *extra], series.ttfb_histogram)
        for method, value in list(self.in_progress.items()):
            f["http_requests_in_progress"].add_metric([method, *self._constant_values], value)
        for exception_labels, value in self._exception_rows():
            f["http_exceptions_total"].add_metric(list(exception_labels), value)
        return iter(f.values())


class SharedNativeHighrHttpStats(SharedNativeHttpStats):
    """:class:`SharedNativeHttpStats` with the label-less high-resolution histogram (classic, in
    shared memory) too: the instrumentator's preset, multi-worker, native histograms on."""

    metrics = (*HttpStats.metrics, HIGHR_METRIC)

    def __init__(
        self,
        registry: PerfRegistry,
        duration_buckets: tuple[float, ...],
        ttfb_buckets: tuple[float, ...],
        store: SharedStore,
        native: NativeHistograms,
        highr_buckets: tuple[float, ...],
        labels: ExtraLabels = NO_EXTRA_LABELS,
    ) -> None:
        super().__init__(registry, duration_buckets, ttfb_buckets, store, native, labels)
        self.highr_buckets = highr_buckets
        self._highr_sum = len(highr_buckets) + 1
        self.highr_slot = self._allocate(HIGHR_METRIC, "histogram", [], highr_buckets)

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
        values: Any = self.store.values
        slot = self.highr_slot
        values[slot + bisect_left(self.highr_buckets, duration)] += 1
        values[slot + self._highr_sum] += duration

    def collect(self) -> Iterator[Metric]:
        # The parent fills every family it knows; the last one, the highr family, is left empty.
        families: list[Any] = list(super().collect())
        values: Any = self.store.values
        slot = self.highr_slot
        samples = list(expand_slots(HIGHR_METRIC, HISTOGRAM, self.highr_buckets, values, slot))
        buckets = [(extra["le"], value) for _, extra, value in samples[:-2]]
        families[-1].add_metric([], buckets, samples[-1][2])
        return iter(families)


class HighrHttpStats(HttpStats):
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

    def rows(self, skip: Container[str] = frozenset()) -> list[FamilyRows]:
        out = super().rows(skip)
        if HIGHR_METRIC not in skip:
            h = self.highr
            cumulative = list(accumulate(list(h.counts)))
            out.append(FamilyRows(HIGHR_METRIC, "histogram", [((), (cumulative, h.sum))], h.bounds))
        return out


class NativeHighrHttpStats(NativeHttpStats):
    """:class:`NativeHttpStats` with the label-less high-resolution histogram too (the
    instrumentator's preset on a registry with native histograms)."""

    metrics = HighrHttpStats.metrics

    def __init__(
        self,
        registry: PerfRegistry,
        duration_buckets: tuple[float, ...],
        ttfb_buckets: tuple[float, ...],
        native: NativeHistograms,
        highr_buckets: tuple[float, ...],
        labels: ExtraLabels = NO_EXTRA_LABELS,
    ) -> None:
        super().__init__(registry, duration_buckets, ttfb_buckets, native, labels)
        self.highr = PlainHistogram(highr_buckets)

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
        self.highr.observe(duration)

    def collect(self) -> Iterator[Metric]:
        # The parent fills every family it knows; the last one, the highr family, is left empty.
        families: list[Any] = list(super().collect())
        buckets, total, _ = self.highr.cumulative()
        families[-1].add_metric([], buckets, total)
        return iter(families)


class SharedHighrHttpStats(SharedHttpStats):
    """:class:`HighrHttpStats` for multi-worker mode: the histogram lives in shared memory."""

    metrics = HighrHttpStats.metrics

    def __init__(
        self,
        registry: PerfRegistry,
        duration_buckets: tuple[float, ...],
        ttfb_buckets: tuple[float, ...],
        store: SharedStore,
        highr_buckets: tuple[float, ...],
        labels: ExtraLabels = NO_EXTRA_LABELS,
    ) -> None:
        super().__init__(registry, duration_buckets, ttfb_buckets, store, labels)
        self.highr_buckets = highr_buckets
        self._highr_sum = len(highr_buckets) + 1
        self.highr_slot = self._allocate(HIGHR_METRIC, "histogram", [], highr_buckets)

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
        values: Any = self.store.values
        slot = self.highr_slot
        values[slot + bisect_left(self.highr_buckets, duration)] += 1
        values[slot + self._highr_sum] += duration

    def rows(self, skip: Container[str] = frozenset()) -> list[FamilyRows]:
        out = super().rows(skip)
        if HIGHR_METRIC not in skip:
            values: Any = self.store.values
            slot, n = self.highr_slot, len(self.highr_buckets) + 1
            cumulative = list(accumulate(values[slot : slot + n]))
            row = ((), (cumulative, float(values[slot + n])))
            out.append(FamilyRows(HIGHR_METRIC, "histogram", [row], self.highr_buckets))
        return out


def keep_exemplars(stats: HttpStats, source: ExemplarSource) -> HttpStats:
    """Make ``stats`` ask ``source`` once per request and leave the labels it gives on the
    request's duration bucket, whatever its class (plain, shared, with the high-resolution
    histogram).

    Done at construction and only for a registry with a source: ``record`` is replaced on this
    instance, so every other one runs its class's method untouched.
    """
    record = stats.record

    def put_plain(method: str, route: str, status: str, duration: float, labels: Any) -> None:
        # The series exists now; a route or status folded by the cap is found under the overflow
        # value, as record() put it there.
        by_method = stats.routes.get(route)
        series = by_method.get(method) if by_method is not None else None
        if series is None:
            series = stats.routes[OVERFLOW][method]
        hist = series.by_status.get(status) or series.by_status[OVERFLOW]
        hist.put_exemplar(duration, labels)

    def put_shared(method: str, route: str, status: str, duration: float, labels: Any) -> None:
        # Counts in shared memory; the exemplar stays with this worker (see WorkerExemplars).
        assert isinstance(stats, SharedHttpStats)
        by_method = stats.shared_routes.get(route)
        if by_method is None or method not in by_method:
            route = OVERFLOW
            by_method = stats.shared_routes[OVERFLOW]
        if status not in by_method[method].by_status:
            status = OVERFLOW
        stats.registry.worker_exemplars.put(
            stats._names["http_request_duration_seconds"],
            # The series' labels as shared memory holds them: extra labels included.
            stats._labelled([("method", method)], route, (("status", status),)),
            stats.exemplar_bounds,
            duration,
            labels,
        )

    put = put_shared if isinstance(stats, SharedHttpStats) else put_plain

    def record_with_exemplar(
        method: str,
        route: str,
        status: str,
        duration: float,
        ttfb: float | None,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        labels = source()
        record(method, route, status, duration, ttfb, request_bytes, response_bytes)
        if labels is not None:
            put(method, route, status, duration, labels)

    vars(stats)["record"] = record_with_exemplar
    vars(stats)["keeps_exemplars"] = put is put_plain  # shared ones stay with WorkerExemplars
    return stats

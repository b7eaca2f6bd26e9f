"""The multi-worker native-histogram HTTP store: the duration and TTFB series are native
histograms in the worker's shared-memory file (multi-worker mode with
``PerfRegistry(native_histograms=...)``); the rest is the multi-worker store's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import Metric

from ..._labels import OVERFLOW
from ..._native import NativeHistograms
from ..._native_snapshots import add_histogram
from ..._rows import current_request
from ..._shared import HISTOGRAM, SharedStore
from ..._shared import expand as expand_slots
from ..._shared_native import SharedNativeHistogram
from ...compat import HIGHR_METRIC
from ...registry import PerfRegistry
from ._plain import _PER_ROUTE, NO_EXTRA_LABELS, ExtraLabels, HttpStats
from ._shared import SharedHttpStats, _SharedHighr, _SharedRouteSeries


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


class SharedNativeHighrHttpStats(_SharedHighr, SharedNativeHttpStats):
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
        self._allocate_highr(highr_buckets)

    def collect(self) -> Iterator[Metric]:
        # The parent fills every family it knows; the last one, the highr family, is left empty.
        families: list[Any] = list(super().collect())
        values: Any = self.store.values
        slot = self.highr_slot
        samples = list(expand_slots(HIGHR_METRIC, HISTOGRAM, self.highr_buckets, values, slot))
        buckets = [(extra["le"], value) for _, extra, value in samples[:-2]]
        families[-1].add_metric([], buckets, samples[-1][2])
        return iter(families)

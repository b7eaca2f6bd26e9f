"""The native-histogram HTTP store (``PerfRegistry(native_histograms=...)``), per process: the
duration and TTFB histograms keep native buckets beside the classic ones, and the store is read
through ``collect()``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import Metric

from ..._histogram import PlainHistogram
from ..._native import NativeHistograms
from ..._native_snapshots import add_histogram
from ...registry import PerfRegistry
from ._plain import NO_EXTRA_LABELS, ExtraLabels, HighrHttpStats, HttpStats, _Highr


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


class NativeHighrHttpStats(_Highr, NativeHttpStats):
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

    def collect(self) -> Iterator[Metric]:
        # The parent fills every family it knows; the last one, the highr family, is left empty.
        families: list[Any] = list(super().collect())
        buckets, total, _ = self.highr.cumulative()
        families[-1].add_metric([], buckets, total)
        return iter(families)

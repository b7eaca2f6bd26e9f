"""The multi-worker HTTP store: the counters and histograms live in the worker's shared-memory
file (:mod:`asgi_perf._shared`), so any worker's scrape reads them exactly."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Container
from itertools import accumulate
from typing import Any

from ..._labels import OVERFLOW
from ..._rows import FamilyRows
from ..._shared import SharedStore
from ...compat import HIGHR_METRIC
from ...registry import PerfRegistry
from ._plain import NO_EXTRA_LABELS, ExtraLabels, HighrHttpStats, HttpStats, _Rows


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


class _SharedHighr(SharedHttpStats):
    """The label-less high-resolution duration histogram in shared memory, on top of a shared
    store class (classic, or native listed after this one), so ``record`` runs the store's, then
    writes the histogram's slots."""

    highr_buckets: tuple[float, ...]
    highr_slot: int
    _highr_sum: int

    def _allocate_highr(self, buckets: tuple[float, ...]) -> None:
        self.highr_buckets = buckets
        self._highr_sum = len(buckets) + 1
        self.highr_slot = self._allocate(HIGHR_METRIC, "histogram", [], buckets)

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


class SharedHighrHttpStats(_SharedHighr):
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
        self._allocate_highr(highr_buckets)

    def rows(self, skip: Container[str] = frozenset()) -> list[FamilyRows]:
        out = super().rows(skip)
        if HIGHR_METRIC not in skip:
            values: Any = self.store.values
            slot, n = self.highr_slot, len(self.highr_buckets) + 1
            cumulative = list(accumulate(values[slot : slot + n]))
            row = ((), (cumulative, float(values[slot + n])))
            out.append(FamilyRows(HIGHR_METRIC, "histogram", [row], self.highr_buckets))
        return out

"""The HTTP stores that keep exemplars on their duration buckets: :class:`ExemplarHttpStats`,
the plain store with an exemplar source, and :func:`keep_exemplars`, which gives any other store
one at construction."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from ..._exemplars import ExemplarSource, span_gate
from ..._labels import OVERFLOW
from ...registry import PerfRegistry
from ._plain import ExtraLabels, HttpStats
from ._shared import SharedHttpStats


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

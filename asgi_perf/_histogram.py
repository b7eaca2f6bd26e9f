"""Lock-free accumulation for the request path, exported by a scrape-time collector.

prometheus_client takes a lock per ``inc``/``observe`` and walks the buckets in Python. The HTTP
middleware runs on the event-loop thread, so it can keep plain Python ints and floats instead and
let a :class:`~prometheus_client.registry.Collector` turn them into metric families when scraped.
The collector derives each histogram's ``_count`` from its buckets, so a scrape racing an
observation on another thread can never show a ``+Inf`` bucket that disagrees with ``_count``.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

ERR_BUCKETS = (
    "buckets must be a non-empty, strictly increasing sequence of finite numbers, got {!r}"
)

_LABELS: dict[tuple[float, ...], tuple[str, ...]] = {}


def check_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    """Validate histogram bounds; ``+Inf`` is implicit and dropped if given."""
    try:
        bounds = tuple(float(b) for b in buckets)
    except (TypeError, ValueError):
        raise ValueError(ERR_BUCKETS.format(buckets)) from None
    if bounds and bounds[-1] == math.inf:
        bounds = bounds[:-1]
    if (
        not bounds
        or not all(math.isfinite(b) for b in bounds)
        or any(a >= b for a, b in pairwise(bounds))
    ):
        raise ValueError(ERR_BUCKETS.format(buckets))
    return bounds


def bucket_labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` strings for ``bounds``, formatted once per bucket layout, not per scrape."""
    labels = _LABELS.get(bounds)
    if labels is None:
        labels = tuple(floatToGoString(b) for b in bounds)  # type: ignore[no-untyped-call]
        _LABELS[bounds] = labels
    return labels


class PlainHistogram:
    """One histogram series: per-bucket (non-cumulative) counts and a sum, and the latest
    exemplar per bucket once one is put (``exemplars`` stays ``None`` until then)."""

    __slots__ = ("bounds", "counts", "exemplars", "labels", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.labels = bucket_labels(bounds)
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.exemplars: list[Exemplar | None] | None = None

    def put_exemplar(self, value: float, labels: dict[str, str]) -> None:
        """Keep ``labels`` as the exemplar of the bucket ``value`` falls in (the latest wins)."""
        exemplars = self.exemplars
        if exemplars is None:
            exemplars = self.exemplars = [None] * (len(self.bounds) + 1)
        # Timestamped, so a scrape that finds the same exemplar again does not store it twice.
        exemplars[bisect_left(self.bounds, value)] = Exemplar(labels, value, time.time())

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, i.e. Prometheus' "le" semantics.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> tuple[list[tuple[str, float]], float, int]:
        """``([(le, cumulative count), ...], sum, count)`` from one copy of the counts."""
        counts = list(self.counts)
        total = self.sum
        out: list[tuple[str, float]] = []
        running = 0
        for label, n in zip(self.labels, counts, strict=False):
            running += n
            out.append((label, running))
        running += counts[-1]
        out.append(("+Inf", running))
        return out, total, running

    def exported(self) -> tuple[list[Any], float, int]:
        """:meth:`cumulative`, each bucket with an exemplar as ``(le, count, exemplar)``: what
        ``HistogramMetricFamily.add_metric`` takes."""
        buckets, total, count = self.cumulative()
        exemplars = self.exemplars
        if exemplars is None:
            return buckets, total, count
        out: list[Any] = [
            bucket if exemplar is None else (*bucket, exemplar)
            for bucket, exemplar in zip(buckets, list(exemplars), strict=False)
        ]
        return out, total, count


__all__ = ["PlainHistogram", "bucket_labels", "check_buckets", "quantile"]


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Estimate the ``q`` quantile from cumulative ``(upper bound, count)`` pairs.

    The same linear interpolation inside the bucket as PromQL's ``histogram_quantile``; a quantile
    that falls in the ``+Inf`` bucket returns the largest finite bound. ``nan`` without data.
    """
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower

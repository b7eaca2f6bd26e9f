"""The registry's samples for the summary, and the window the summary's rates cover.

:class:`Samples` indexes what a collect returns by catalogue name; :class:`Reading` is one
summary in the making: those samples plus the window baseline (``base``) it subtracts and the
baseline it leaves for the next reading (``fresh``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .. import _native_snapshots as snapshots
from .._histogram import bucket_labels, quantile
from .._native import NativeSnapshot
from .._native_snapshots import NativeFamily
from .._rows import FamilyRows, RowsRequest, reading_rows
from ..registry import PerfRegistry
from ._system import system_collector_skipped

Labels = dict[str, str]


def clean(value: float | None, digits: int = 6) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, digits)


class SampledHistogram:
    """A histogram aggregated over some label combinations: cumulative buckets, sum, count, and
    the native buckets of series that keep them (merged at the lowest schema).

    Quantiles come from the classic buckets; from the native ones when there are no classic
    buckets but ``+Inf`` (native-only histograms)."""

    __slots__ = ("buckets", "count", "native", "sum")

    def __init__(self) -> None:
        self.buckets: dict[float, float] = {}
        self.sum = 0.0
        self.count = 0.0
        self.native: NativeSnapshot | None = None

    def add_native(self, snap: NativeSnapshot) -> None:
        native = self.native
        self.native = snap if native is None else snapshots.merge([native, snap])

    def minus(self, old: SampledHistogram | None) -> SampledHistogram:
        """The observations since ``old`` (all of them if ``old`` is missing or was reset)."""
        if old is None or old.count > self.count:
            return self
        out = SampledHistogram()
        out.sum = self.sum - old.sum
        out.count = self.count - old.count
        out.buckets = {le: n - old.buckets.get(le, 0.0) for le, n in self.buckets.items()}
        if self.native is not None:
            out.native = (
                self.native if old.native is None else snapshots.subtract(self.native, old.native)
            )
        return out

    def q(self, q: float) -> float | None:
        if self.count <= 0:
            return None
        if self.native is not None and len(self.buckets) <= 1:
            # Native only: the one classic bucket is +Inf, the native buckets hold the shape.
            return clean(quantile(q, snapshots.quantile_points(self.native)))
        return clean(quantile(q, sorted(self.buckets.items())))

    def avg(self) -> float | None:
        return clean(self.sum / self.count) if self.count > 0 else None


class Samples:
    """The registry's current samples, indexed by unprefixed sample name.

    Collectors that hand their series over as rows (:mod:`asgi_perf._rows`: the HTTP series,
    which grow with the routes) are read as rows, without building a prometheus_client sample per
    value: their histograms go to ``hists`` whole, their other series to ``by_name`` as the
    samples ``collect()`` would give. ``rows=False`` reads everything through ``collect()``.

    The ``system_*`` collector is skipped: the summary reads its own sampler, and running the
    collector here would shorten the CPU window of the next Prometheus scrape.
    """

    def __init__(self, registry: PerfRegistry, *, rows: bool = True) -> None:
        prefix = f"{registry.namespace}_" if registry.namespace else ""
        self.by_name: dict[str, list[tuple[Labels, float]]] = {}
        #: histogram name -> [(labels, cumulative counts keyed by upper bound, sum, count)]
        self.hists: dict[str, list[tuple[Labels, list[tuple[float, float]], float, float]]] = {}
        #: histogram name -> [(labels, native buckets)] of the series that keep native buckets
        self.natives: dict[str, list[tuple[Labels, NativeSnapshot]]] = {}
        sink: list[FamilyRows] = []
        request = RowsRequest(sink=sink) if rows else None
        with system_collector_skipped(), reading_rows(request):
            for family in registry.prometheus.collect():
                native: NativeFamily | None = getattr(family, "native", None)
                # Only native-only histograms need theirs (their first bucket is +Inf): merging
                # native buckets is kept off the summaries that have classic ones to read.
                if (
                    native is not None
                    and family.name.startswith(prefix)
                    and family.samples
                    and family.samples[0].labels.get("le") == "+Inf"
                ):
                    self.natives.setdefault(family.name[len(prefix) :], []).extend(
                        (dict(key), snap) for key, snap in native.series.items()
                    )
                for s in family.samples:
                    if not s.name.startswith(prefix):
                        continue
                    name = s.name[len(prefix) :]
                    self.by_name.setdefault(name, []).append((s.labels, s.value))
        for family_rows in sink:
            labelnames = (*registry.spec(family_rows.name).labels, *family_rows.extra_labels)
            self._add_rows(family_rows, labelnames)

    def _add_rows(self, family: FamilyRows, labelnames: tuple[str, ...]) -> None:
        name, kind = family.name, family.kind
        if kind == "histogram":
            les = _les(family.bounds)
            hists = self.hists.setdefault(name, [])
            for values, (cumulative, total) in family.rows:
                labels = dict(zip(labelnames, values, strict=True))
                hists.append(
                    (labels, list(zip(les, cumulative, strict=True)), total, cumulative[-1])
                )
        elif kind == "summary":
            counts = self.by_name.setdefault(f"{name}_count", [])
            sums = self.by_name.setdefault(f"{name}_sum", [])
            for values, (count, total) in family.rows:
                labels = dict(zip(labelnames, values, strict=True))
                counts.append((labels, count))
                sums.append((labels, total))
        else:
            sample = f"{name}_total" if kind == "counter" and not name.endswith("_total") else name
            out = self.by_name.setdefault(sample, [])
            for values, value in family.rows:
                out.append((dict(zip(labelnames, values, strict=True)), value))

    def has(self, name: str) -> bool:
        return name in self.by_name or f"{name}_count" in self.by_name or name in self.hists

    def values(self, name: str) -> list[tuple[Labels, float]]:
        return self.by_name.get(name, [])

    def sum_by(self, name: str, *keys: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for labels, value in self.values(name):
            key = tuple(labels.get(k, "") for k in keys)
            out[key] = out.get(key, 0.0) + value
        return out

    def total_by(self, name: str, key: str) -> dict[str, float]:
        """``name`` summed by one label, keyed by that label's value."""
        return {k: v for (k,), v in self.sum_by(name, key).items()}

    def hist_by(
        self, name: str, key: Callable[[Labels], tuple[str, ...] | None]
    ) -> dict[tuple[str, ...], SampledHistogram]:
        """Histograms of ``name`` merged by ``key(labels)`` (``None`` skips the series)."""
        out: dict[tuple[str, ...], SampledHistogram] = {}
        for labels, buckets, total, count in self.hists.get(name, ()):
            k = key(labels)
            if k is None:
                continue
            hist = out.get(k)
            if hist is None:
                hist = out[k] = SampledHistogram()
            merged = hist.buckets
            for le, n in buckets:
                merged[le] = merged.get(le, 0.0) + n
            hist.sum += total
            hist.count += count
        for suffix in ("_bucket", "_sum", "_count"):
            for labels, value in self.values(name + suffix):
                k = key(labels)
                if k is None:
                    continue
                hist = out.get(k)
                if hist is None:
                    hist = out[k] = SampledHistogram()
                if suffix == "_bucket":
                    le = float(labels["le"])
                    hist.buckets[le] = hist.buckets.get(le, 0.0) + value
                elif suffix == "_sum":
                    hist.sum += value
                else:
                    hist.count += value
        for labels, snap in self.natives.get(name, ()):
            k = key(labels)
            if k is not None:
                found = out.get(k)
                if found is None:
                    found = out[k] = SampledHistogram()
                found.add_native(snap)
        return out


_LES: dict[tuple[float, ...], tuple[float, ...]] = {}


def _les(bounds: tuple[float, ...]) -> tuple[float, ...]:
    """The upper bounds as the summary reads them from exposed ``le`` labels, ``+Inf`` last."""
    les = _LES.get(bounds)
    if les is None:
        les = _LES[bounds] = (*(float(le) for le in bucket_labels(bounds)), math.inf)
    return les


class Window:
    """Cumulative figures at the start of the current window, to subtract from the current ones."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.hists: dict[str, SampledHistogram] = {}
        self.counters: dict[str, float] = {}


class Reading:
    """One summary being built: the registry's samples now, and the window they are read over.

    The section builders (:mod:`._sections`) read samples through it and record each figure they
    window in ``fresh``, so the next reading can subtract it.
    """

    def __init__(
        self, registry: PerfRegistry, samples: Samples, base: Window, fresh: Window, now: float
    ) -> None:
        self.registry = registry
        self.s = samples
        self.base = base
        self.fresh = fresh
        self.now = now
        self.seconds = max(now - base.at, 1e-9)

    # -- window helpers --------------------------------------------------------------------------
    def window_hist(self, key: str, hist: SampledHistogram) -> SampledHistogram:
        self.fresh.hists[key] = hist
        return hist.minus(self.base.hists.get(key))

    def window_count(self, key: str, value: float) -> float:
        self.fresh.counters[key] = value
        old = self.base.counters.get(key)
        return value if old is None or old > value else value - old

    def rate(self, delta: float) -> float:
        return round(delta / self.seconds, 4)

    # -- sections --------------------------------------------------------------------------------


def merge(into: SampledHistogram, other: SampledHistogram) -> None:
    into.count += other.count
    into.sum += other.sum
    for le, n in other.buckets.items():
        into.buckets[le] = into.buckets.get(le, 0.0) + n
    if other.native is not None:
        into.add_native(other.native)


def ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole > 0 else None


__all__ = ["Labels", "Reading", "SampledHistogram", "Samples", "Window", "merge", "ratio"]

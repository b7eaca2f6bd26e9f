"""Prometheus native histograms: sparse exponential buckets next to (or instead of) classic ones.

A native histogram of schema ``s`` has bucket boundaries at powers of ``2 ** (2 ** -s)``: bucket
``i`` holds the observations in ``(base ** (i - 1), base ** i]``. Only buckets that received an
observation exist, so one series carries what a classic histogram spreads over one series per
bucket, at a finer resolution. Observations whose absolute value is at most the zero threshold go
to one zero bucket.

The bucket index is found as Prometheus' Go client finds it: ``math.frexp`` splits the value into
a mantissa in ``[0.5, 1)`` and an exponent; a bisection of the mantissa over the ``2 ** s``
sub-boundaries of one power of two gives the rest. When more than ``max_buckets`` buckets are
populated, the schema is lowered by one (each bucket doubles its width and pairs of buckets merge)
until the histogram fits again or the schema reaches -4: memory and series size stay bounded and
the resolution drops, never the data.

:class:`NativeHistogram` is a :class:`~asgi_perf._histogram.PlainHistogram` (the classic buckets,
or only ``+Inf`` when classic buckets are off) that also keeps the native buckets. What is done
with a snapshot once taken (merged across workers, subtracted for a window, carried in JSON,
added to a metric family) is in :mod:`asgi_perf._native_snapshots`.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left
from dataclasses import dataclass
from math import frexp
from typing import NamedTuple

from prometheus_client.utils import floatToGoString

from ._checks import check, is_finite, is_int_at_least
from ._histogram import PlainHistogram

#: The schemas Prometheus accepts: -4 (a factor of 65536 per bucket) to 8 (1.0027).
MIN_SCHEMA = -4
MAX_SCHEMA = 8
#: Go client's default zero threshold (2 ** -128): only a true zero lands in the zero bucket.
DEFAULT_ZERO_THRESHOLD = 2.938735877055719e-39

ERR_SCHEMA = f"schema must be an int from {MIN_SCHEMA} to {MAX_SCHEMA}, got {{!r}}"
ERR_FACTOR = "bucket_factor must be a finite number > 1, got {!r}"
ERR_BOTH = "give schema or bucket_factor, not both"
ERR_ZERO = "zero_threshold must be a finite number >= 0, got {!r}"
ERR_MAX_BUCKETS = "max_buckets must be an int >= 1, got {!r}"
ERR_CLASSIC = "classic must be True or False, got {!r}"
ERR_NATIVE = "native_histograms must be a NativeHistograms, True, False or None, got {!r}"

# Mantissa boundaries per positive schema: 2 ** (j / 2 ** s) / 2 for j in range(2 ** s), i.e. the
# bucket boundaries inside [0.5, 1), where frexp's mantissa lives.
_FRAC_BOUNDS: dict[int, tuple[float, ...]] = {
    s: tuple(2 ** (j / 2**s) / 2 for j in range(2**s)) for s in range(1, MAX_SCHEMA + 1)
}


def frac_bounds(schema: int) -> tuple[float, ...]:
    """The mantissa boundaries of a positive schema (empty for schema <= 0)."""
    return _FRAC_BOUNDS.get(schema, ())


#: Infinity has no bucket of its own (``frexp`` gives no exponent for it): it is counted in the
#: bucket of the largest finite float, the highest any series can have, so a series never holds
#: more buckets than :func:`buckets_at_min_schema` counts.
INF = math.inf
MAX_FRAC_EXP = frexp(sys.float_info.max)


def bucket_key(value: float, schema: int) -> int:
    """The index of the bucket a positive ``value`` falls in at ``schema`` (what
    :meth:`NativeHistogram.observe` computes inline)."""
    frac, exp = frexp(value)
    if frac == INF:
        frac, exp = MAX_FRAC_EXP
    if schema > 0:
        return bisect_left(_FRAC_BOUNDS[schema], frac) + (exp - 1) * (1 << schema)
    if frac == 0.5:
        exp -= 1
    shift = -schema
    return (exp + (1 << shift) - 1) >> shift


def buckets_at_min_schema(zero_threshold: float) -> int:
    """How many buckets (both signs) values beyond ``zero_threshold`` can populate at schema -4:
    past ``max_buckets`` the schema stops there, so a series may hold this many."""
    lowest = bucket_key(math.nextafter(zero_threshold, math.inf), MIN_SCHEMA)
    highest = bucket_key(sys.float_info.max, MIN_SCHEMA)
    return 2 * (highest - lowest + 1)


def schema_for_factor(factor: float) -> int:
    """The largest schema whose bucket growth factor is at most ``factor`` (clamped to -4..8)."""
    schema = -math.floor(math.log2(math.log2(factor)))
    return max(MIN_SCHEMA, min(MAX_SCHEMA, schema))


@dataclass(frozen=True)
class NativeHistograms:
    """How the duration histograms keep native buckets (``PerfRegistry(native_histograms=...)``).

    :param schema: resolution, -4..8: bucket boundaries grow by ``2 ** (2 ** -schema)``
        (3, the default, is a factor of 1.09: an estimate within 4.5 %).
    :param bucket_factor: the growth factor instead of a schema (``1.1`` gives schema 3): the
        largest schema whose factor does not exceed it.
    :param zero_threshold: observations with an absolute value at most this go to the zero bucket.
    :param max_buckets: populated buckets per series before the schema is lowered (buckets merge
        in pairs) to fit.
    :param classic: keep the classic ``le`` buckets alongside (the default), so dashboards and
        rules over ``_bucket`` series keep working; ``False`` exposes only ``+Inf``, ``_count``
        and ``_sum`` in the text formats and the native buckets over protobuf.
    """

    schema: int | None = None
    bucket_factor: float | None = None
    zero_threshold: float = DEFAULT_ZERO_THRESHOLD
    max_buckets: int = 160
    classic: bool = True

    def __post_init__(self) -> None:
        check(self.schema is None or self.bucket_factor is None, ERR_BOTH)
        if self.bucket_factor is not None:
            check(
                is_finite(self.bucket_factor) and self.bucket_factor > 1,
                ERR_FACTOR,
                self.bucket_factor,
            )
            object.__setattr__(self, "schema", schema_for_factor(float(self.bucket_factor)))
        elif self.schema is None:
            object.__setattr__(self, "schema", 3)
        else:
            check(
                is_int_at_least(self.schema, MIN_SCHEMA) and self.schema <= MAX_SCHEMA,
                ERR_SCHEMA,
                self.schema,
            )
        check(
            is_finite(self.zero_threshold) and self.zero_threshold >= 0,
            ERR_ZERO,
            self.zero_threshold,
        )
        check(is_int_at_least(self.max_buckets, 1), ERR_MAX_BUCKETS, self.max_buckets)
        check(isinstance(self.classic, bool), ERR_CLASSIC, self.classic)

    @classmethod
    def resolve(cls, value: object) -> NativeHistograms | None:
        """``True`` is the defaults, ``False``/``None`` off; anything else a ``ValueError``."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        check(isinstance(value, cls), ERR_NATIVE, value)
        assert isinstance(value, cls)
        return value

    def histogram(self, bounds: tuple[float, ...]) -> NativeHistogram:
        """A new series with these classic bounds (dropped when ``classic`` is off)."""
        assert self.schema is not None
        return NativeHistogram(
            bounds if self.classic else (),
            self.schema,
            self.zero_threshold,
            self.max_buckets,
        )


class Spans(NamedTuple):
    """One side of a native histogram as the exposition formats carry it."""

    #: ``(offset, length)`` runs of populated buckets: the first offset is the first bucket's
    #: index, each later one the number of empty buckets skipped.
    spans: tuple[tuple[int, int], ...]
    #: The bucket counts, each as the difference to the previous one (the first absolute).
    deltas: tuple[int, ...]


class NativeSnapshot(NamedTuple):
    """A consistent copy of a native histogram, taken at scrape time."""

    observations: int
    sum: float
    schema: int
    zero_threshold: float
    zero_count: int
    positive: Spans
    negative: Spans


def spans_of(buckets: dict[int, int]) -> Spans:
    """Spans and deltas of a ``{index: count}`` map (zero counts are dropped)."""
    spans: list[tuple[int, int]] = []
    deltas: list[int] = []
    previous_index = 0
    previous_count = 0
    start = 0
    length = 0
    for index in sorted(buckets):
        count = buckets[index]
        if not count:
            continue
        if length and index == previous_index + 1:
            length += 1
        else:
            if length:
                spans.append((start, length))
                start = index - previous_index - 1
            else:
                start = index
            length = 1
        deltas.append(count - previous_count)
        previous_index, previous_count = index, count
    if length:
        spans.append((start, length))
    return Spans(tuple(spans), tuple(deltas))


def downscale(buckets: dict[int, int], by: int) -> dict[int, int]:
    """The buckets at a schema ``by`` lower: bucket ``i`` merges into ``((i - 1) >> by) + 1``."""
    out: dict[int, int] = {}
    for index, count in buckets.items():
        key = ((index - 1) >> by) + 1
        out[key] = out.get(key, 0) + count
    return out


class NativeHistogram(PlainHistogram):
    """A :class:`PlainHistogram` that also keeps sparse exponential (native) buckets.

    The classic part is the parent's, unchanged (with no bounds it is one ``+Inf`` bucket). The
    native buckets are two ``{index: count}`` dicts and a zero-bucket count; a new bucket past
    ``max_buckets`` lowers the schema instead of growing the dicts.
    """

    __slots__ = (
        "_frac_bounds",
        "_per_power",
        "max_buckets",
        "negative",
        "positive",
        "schema",
        "zero_count",
        "zero_threshold",
    )

    def __init__(
        self, bounds: tuple[float, ...], schema: int, zero_threshold: float, max_buckets: int
    ) -> None:
        super().__init__(bounds)
        self.zero_threshold = zero_threshold
        self.max_buckets = max_buckets
        self.positive: dict[int, int] = {}
        self.negative: dict[int, int] = {}
        self.zero_count = 0
        self._set_schema(schema)

    def _set_schema(self, schema: int) -> None:
        bounds = _FRAC_BOUNDS.get(schema, ())
        self._frac_bounds = bounds
        self._per_power = len(bounds)  # buckets per power of two; 0 for schema <= 0
        self.schema = schema

    def observe(self, value: float) -> None:
        # PlainHistogram.observe, then the native bucket, inlined: this runs once per request.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        if value > self.zero_threshold:
            buckets = self.positive
        elif value < -self.zero_threshold:
            buckets = self.negative
            value = -value
        else:
            self.zero_count += 1  # NaN too: it has no bucket, and the count must include it
            return
        frac, exp = frexp(value)
        if frac == INF:  # frexp(inf) is (inf, 0): infinity counts in the highest finite bucket
            frac, exp = MAX_FRAC_EXP
        per_power = self._per_power
        if per_power:
            key = bisect_left(self._frac_bounds, frac) + (exp - 1) * per_power
        else:
            # Schema <= 0: a bucket spans 2 ** -schema powers of two. An exact power of two
            # (mantissa 0.5) belongs to the bucket below, as bucket upper bounds are inclusive.
            if frac == 0.5:
                exp -= 1
            shift = -self.schema
            key = (exp + (1 << shift) - 1) >> shift
        count = buckets.get(key)
        if count is None:
            buckets[key] = 1
            if len(self.positive) + len(self.negative) > self.max_buckets:
                self._reduce()
        else:
            buckets[key] = count + 1

    def _reduce(self) -> None:
        """Lower the schema until the populated buckets fit in ``max_buckets`` (or -4)."""
        schema = self.schema
        positive, negative = self.positive, self.negative
        while len(positive) + len(negative) > self.max_buckets and schema > MIN_SCHEMA:
            positive = downscale(positive, 1)
            negative = downscale(negative, 1)
            schema -= 1
        # Buckets first, schema last: a scrape that reads the schema before and after copying
        # the buckets sees whether it raced this change (see snapshot()).
        self.positive, self.negative = positive, negative
        self._set_schema(schema)

    def cumulative(self) -> tuple[list[tuple[str, float]], float, int]:
        """With classic buckets, theirs; native only, the native buckets' upper bounds as ``le``
        pairs, so quantile estimates (timer stats, summaries) keep the native resolution."""
        if self.bounds:
            return super().cumulative()
        return native_cumulative(self.snapshot())

    def snapshot(self) -> NativeSnapshot:
        """The native part, copied consistently (a scrape may race observations)."""
        while True:
            schema = self.schema
            positive = self.positive.copy()
            negative = self.negative.copy()
            zero = self.zero_count
            total = self.sum
            if schema == self.schema:
                break
        count = zero + sum(positive.values()) + sum(negative.values())
        return NativeSnapshot(
            count,
            total,
            schema,
            self.zero_threshold,
            zero,
            spans_of(positive),
            spans_of(negative),
        )


def native_cumulative(snap: NativeSnapshot) -> tuple[list[tuple[str, float]], float, int]:
    """``([(le, cumulative count), ...], sum, count)`` with the native buckets' upper bounds as
    ``le``: what :meth:`PlainHistogram.cumulative` gives for a native-only series."""
    base = 2.0 ** (2.0**-snap.schema)
    bounds: list[tuple[float, int]] = []
    # Negative buckets, most negative first: bucket i holds [-base**i, -base**(i-1)).
    for index, count in sorted(expand(snap.negative).items(), reverse=True):
        bounds.append((-(base ** (index - 1)), count))
    bounds.append((snap.zero_threshold, snap.zero_count))
    bounds.extend((base**index, count) for index, count in sorted(expand(snap.positive).items()))
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in bounds:
        running += count
        out.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
    out.append(("+Inf", running))
    return out, snap.sum, running


def make_snapshot(
    schema: int,
    zero_threshold: float,
    zero_count: int,
    total: float,
    positive: dict[int, int],
    negative: dict[int, int],
) -> NativeSnapshot:
    """A snapshot of these buckets (its count is theirs, so the two never disagree)."""
    count = zero_count + sum(positive.values()) + sum(negative.values())
    return NativeSnapshot(
        count,
        total,
        schema,
        zero_threshold,
        zero_count,
        spans_of(positive),
        spans_of(negative),
    )


def expand(side: Spans) -> dict[int, int]:
    """``{index: count}`` from spans and deltas (the inverse of :func:`spans_of`)."""
    out: dict[int, int] = {}
    deltas = iter(side.deltas)
    index = 0
    count = 0
    first = True
    for offset, length in side.spans:
        index = offset if first else index + offset + 1
        first = False
        for i in range(length):
            if i:
                index += 1
            count += next(deltas)
            out[index] = count
    return out


__all__ = [
    "DEFAULT_ZERO_THRESHOLD",
    "MAX_SCHEMA",
    "MIN_SCHEMA",
    "NativeHistogram",
    "NativeHistograms",
    "NativeSnapshot",
    "Spans",
    "bucket_key",
    "buckets_at_min_schema",
    "downscale",
    "expand",
    "frac_bounds",
    "make_snapshot",
    "native_cumulative",
    "schema_for_factor",
    "spans_of",
]

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
or only ``+Inf`` when classic buckets are off) that also keeps the native buckets. Scrape-time
collectors add both with :func:`add_histogram`; the text formats show the classic part, the
protobuf exposition both.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from math import frexp
from operator import itemgetter, sub
from typing import Any, NamedTuple

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


def quantile_points(snap: NativeSnapshot) -> list[tuple[float, float]]:
    """Cumulative ``(upper bound, count)`` pairs for :func:`asgi_perf._histogram.quantile`, each
    populated bucket opened at its own lower bound, so an estimate interpolates inside that bucket
    (as PromQL does) rather than across the empty buckets before it."""
    base = 2.0 ** (2.0**-snap.schema)
    points: list[tuple[float, float]] = []
    running = 0.0
    for index, count in sorted(expand(snap.negative).items(), reverse=True):
        points.append((-(base**index), running))
        running += count
        points.append((-(base ** (index - 1)), running))
    if snap.zero_count:
        points.append((-snap.zero_threshold, running))
        running += snap.zero_count
        points.append((snap.zero_threshold, running))
    for index, count in sorted(expand(snap.positive).items()):
        points.append((base ** (index - 1), running))
        running += count
        points.append((base**index, running))
    points.append((math.inf, running))
    return points


def to_json(snap: NativeSnapshot) -> list[Any]:
    """A snapshot as JSON-able lists (what a multi-worker snapshot file carries)."""
    return [
        snap.schema,
        snap.zero_threshold,
        snap.zero_count,
        snap.sum,
        sorted(expand(snap.positive).items()),
        sorted(expand(snap.negative).items()),
    ]


def from_json(raw: Any) -> NativeSnapshot:
    """The inverse of :func:`to_json`; ``ValueError``/``TypeError`` for anything else."""
    schema, threshold, zero, total, positive, negative = raw
    if type(schema) is not int or not MIN_SCHEMA <= schema <= MAX_SCHEMA:
        raise ValueError(f"bad schema {schema!r}")
    sides = []
    for side in (positive, negative):
        buckets: dict[int, int] = {}
        for index, count in side:
            if type(index) is not int or type(count) is not int or count < 0:
                raise TypeError(f"bad bucket {index!r}: {count!r}")
            buckets[index] = count
        sides.append(buckets)
    if type(zero) is not int or zero < 0:
        raise TypeError(f"bad zero count {zero!r}")
    if isinstance(threshold, bool) or isinstance(total, bool):
        raise TypeError("expected numbers")
    return make_snapshot(schema, float(threshold), zero, float(total), sides[0], sides[1])


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


def merge(snapshots: list[NativeSnapshot]) -> NativeSnapshot:
    """One snapshot of the sum of ``snapshots`` (e.g. several workers), at the lowest schema among
    them; the zero threshold is the widest."""
    schema = min(s.schema for s in snapshots)
    positive: dict[int, int] = {}
    negative: dict[int, int] = {}
    zero = 0
    total = 0.0
    for snap in snapshots:
        zero += snap.zero_count
        total += snap.sum
        for side, into in ((snap.positive, positive), (snap.negative, negative)):
            buckets = downscale(expand(side), snap.schema - schema)
            for index, count in buckets.items():
                into[index] = into.get(index, 0) + count
    count = zero + sum(positive.values()) + sum(negative.values())
    threshold = max(s.zero_threshold for s in snapshots)
    return NativeSnapshot(
        count, total, schema, threshold, zero, spans_of(positive), spans_of(negative)
    )


class NativeParts(NamedTuple):
    """A native histogram as a merge adds it: ``(code, count)`` pairs, no spans.

    A code is ``index * 2`` for a positive bucket, ``index * 2 + 1`` for a negative one (as the
    shared-memory run stores them), so one list holds both sides and sorting the codes sorts each
    side's indexes. A scrape of many workers reads each worker's run into these as it is stored
    (floats, whole numbers) and builds spans once per merged series (:func:`merged_snapshot`),
    not once per worker and then expanded again to add them up.
    """

    schema: int
    zero_threshold: float
    zero_count: int
    sum: float
    #: ``[code, count, code, count, ...]``: whole numbers (ints, or floats that are), every
    #: count >= 1, a code possibly repeated (its counts add up), in no particular order.
    pairs: Sequence[float]


def parts_of(snap: NativeSnapshot) -> NativeParts:
    """The parts of a snapshot (its buckets expanded from spans)."""
    pairs: list[int] = []
    for side, spans in ((0, snap.positive), (1, snap.negative)):
        for index, count in expand(spans).items():
            pairs += (index << 1 | side, count)
    return NativeParts(snap.schema, snap.zero_threshold, snap.zero_count, snap.sum, pairs)


def merged_snapshot(parts: Sequence[NativeParts]) -> NativeSnapshot:
    """The snapshot of the sum of ``parts``: what :func:`merge` gives for their snapshots
    (lowest schema, widest zero threshold), spans built once."""
    schema, threshold, zero, total, codes, counts = _add_parts(parts)
    # Comprehensions rather than map/compress: for the tens of buckets of a series they cost
    # fewer instructions.
    negative = [code for code in codes if code & 1]
    if not negative:
        positive, pos_counts, neg_counts = codes, counts, []
    else:
        positive = [code for code in codes if not code & 1]
        pos_counts = [count for code, count in zip(codes, counts, strict=True) if not code & 1]
        neg_counts = [count for code, count in zip(codes, counts, strict=True) if code & 1]
    return _new_snapshot(
        NativeSnapshot,
        (
            zero + sum(counts),
            total,
            schema,
            threshold,
            zero,
            _spans_of_sorted([code >> 1 for code in positive], pos_counts),
            _spans_of_sorted([code >> 1 for code in negative], neg_counts),
        ),
    )


#: ``NativeSnapshot(...)`` without its generated ``__new__`` (a Python-level call).
_new_snapshot = tuple.__new__


def merge_parts(parts: Sequence[NativeParts]) -> NativeParts:
    """The sum of ``parts`` as parts (sorted distinct codes, ints): what a compacted file keeps."""
    schema, threshold, zero, total, codes, counts = _add_parts(parts)
    pairs: list[int] = [0] * (2 * len(codes))
    pairs[0::2] = codes
    pairs[1::2] = counts
    return NativeParts(schema, threshold, zero, total, pairs)


def _add_parts(
    parts: Sequence[NativeParts],
) -> tuple[int, float, int, float, list[int], list[int]]:
    """``(schema, zero threshold, zero count, sum, sorted codes, their counts)`` of the sum."""
    schema = min([p.schema for p in parts])
    into: dict[float, float] = {}
    zero = 0
    total = 0.0
    for part in parts:
        zero += part.zero_count
        total += part.sum
        pairs = part.pairs
        if part.schema != schema:
            pairs = _downscale_pairs(pairs, part.schema - schema)
        # A code is an int or a float of the same value (one key either way); counts are whole
        # numbers well below 2**53, so adding them as floats is exact. Both become ints once
        # they are added up, per merged series rather than per worker.
        # zip() without strict=: the keyword alone costs more than the pairs of a small part.
        it = iter(pairs)
        if not into:
            into = dict(zip(it, it))  # noqa: B905 - built in C: the usual first part
            if 2 * len(into) == len(pairs):
                continue
            into, it = {}, iter(pairs)  # it repeats a code: add them up below
        get = into.get
        for code, count in zip(it, it):  # noqa: B905 - pairs: an even length
            into[code] = get(code, 0) + count
    if len(parts) == 1:
        zero, total = parts[0].zero_count, parts[0].sum  # as they were (a -0.0 sum stays)
    codes = sorted(into)
    return (
        schema,
        max([p.zero_threshold for p in parts]),
        zero,
        total,
        list(map(int, codes)),
        list(map(int, map(into.__getitem__, codes))),
    )


def _downscale_pairs(pairs: Sequence[float], by: int) -> list[int]:
    """:func:`downscale` of pairs (both sides at once; a code keeps its side)."""
    out: list[int] = []
    it = iter(pairs)
    for stored, count in zip(it, it, strict=False):
        code = int(stored)
        out += ((((code >> 1) - 1 >> by) + 1) << 1 | code & 1, int(count))
    return out


_NO_SPANS = Spans((), ())


def _spans_of_sorted(indexes: list[int], counts: list[int]) -> Spans:
    """:func:`spans_of` of sorted, distinct indexes and their (non-zero) counts."""
    if not indexes:
        return _NO_SPANS
    # Deltas in C: each count minus the one before (the first minus 0).
    deltas = tuple(map(sub, counts, [0, *counts[:-1]]))
    spans: list[tuple[int, int]] = []
    start = previous = indexes[0]
    offset = start
    for index in indexes[1:]:
        if index != previous + 1:
            spans.append((offset, previous - start + 1))
            offset = index - previous - 1
            start = index
        previous = index
    spans.append((offset, previous - start + 1))
    return Spans(tuple(spans), deltas)


def parts_to_json(parts: NativeParts) -> list[Any]:
    """:func:`to_json` of parts (added up first, if they repeat a code)."""
    schema, threshold, zero, total, codes, counts = _add_parts([parts])
    pairs = list(zip(codes, counts, strict=True))
    return [
        schema,
        threshold,
        zero,
        total,
        [(code >> 1, count) for code, count in pairs if not code & 1],
        [(code >> 1, count) for code, count in pairs if code & 1],
    ]


def parts_from_json(raw: Any) -> NativeParts:
    """:func:`from_json`, as parts; ``ValueError``/``TypeError`` for anything else."""
    schema, threshold, zero, total, positive, negative = raw
    if type(schema) is not int or not MIN_SCHEMA <= schema <= MAX_SCHEMA:
        raise ValueError(f"bad schema {schema!r}")
    flat: list[int] = []
    repeated = False
    for side, pairs in ((0, positive), (1, negative)):
        for index, count in pairs:
            if type(index) is not int or type(count) is not int or count < 0:
                raise TypeError(f"bad bucket {index!r}: {count!r}")
            if count:
                flat += (index << 1 | side, count)
        repeated = repeated or len(set(map(itemgetter(0), pairs))) != len(pairs)
    if repeated:
        # Not as written: a repeated index keeps its last count, as from_json keeps it.
        buckets: dict[int, int] = {}
        for side, pairs in ((0, positive), (1, negative)):
            buckets.update((index << 1 | side, count) for index, count in pairs)
        flat = [x for code, count in buckets.items() if count for x in (code, count)]
    if type(zero) is not int or zero < 0:
        raise TypeError(f"bad zero count {zero!r}")
    if isinstance(threshold, bool) or isinstance(total, bool):
        raise TypeError("expected numbers")
    return NativeParts(schema, float(threshold), zero, float(total), flat)


def subtract(new: NativeSnapshot, old: NativeSnapshot) -> NativeSnapshot:
    """The observations in ``new`` that ``old`` (an earlier copy of the same series) did not
    have, at the lower of their schemas (a bucket that would go negative counts as empty)."""
    schema = min(new.schema, old.schema)
    sides = []
    for now, before in ((new.positive, old.positive), (new.negative, old.negative)):
        buckets = downscale(expand(now), new.schema - schema)
        for index, count in downscale(expand(before), old.schema - schema).items():
            buckets[index] = max(buckets.get(index, 0) - count, 0)
        sides.append(buckets)
    return make_snapshot(
        schema,
        new.zero_threshold,
        max(new.zero_count - old.zero_count, 0),
        new.sum - old.sum,
        sides[0],
        sides[1],
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


class NativeFamily:
    """The native parts of one histogram family's series, keyed by their sorted label items; a
    collector attaches it to the family as ``native`` (see :func:`add_histogram`)."""

    __slots__ = ("series",)

    def __init__(self) -> None:
        self.series: dict[tuple[tuple[str, str], ...], NativeSnapshot] = {}


def add_histogram(family: Any, labels: list[str], hist: PlainHistogram) -> int:
    """Add ``hist`` to a ``HistogramMetricFamily`` (classic samples with their exemplars, and the
    native part as the family's ``native`` attribute when ``hist`` keeps one: a
    :class:`NativeHistogram`, or its shared-memory twin in multi-worker mode, whichever has a
    ``snapshot()``); returns the count."""
    snapshot = getattr(hist, "snapshot", None)
    if snapshot is None:
        buckets, total, count = hist.exported()
        family.add_metric(labels, buckets, total)
        return count
    snap: NativeSnapshot = snapshot()
    if hist.bounds:
        buckets, total, _ = hist.exported()
    else:
        # Native only: the text formats show +Inf, _count and _sum from the same copy, and the
        # +Inf bucket's exemplar (the one bucket there is).
        exemplars = hist.exemplars
        kept = exemplars[-1] if exemplars is not None else None
        inf: Any = (
            ("+Inf", snap.observations) if kept is None else ("+Inf", snap.observations, kept)
        )
        buckets, total = [inf], snap.sum
    family.add_metric(labels, buckets, total)
    native = getattr(family, "native", None)
    if native is None:
        native = family.native = NativeFamily()
    # The _sum sample just added carries the series' labels as the exposition groups them.
    native.series[tuple(sorted(family.samples[-1].labels.items()))] = snap
    return snap.observations


__all__ = [
    "DEFAULT_ZERO_THRESHOLD",
    "MAX_SCHEMA",
    "MIN_SCHEMA",
    "NativeFamily",
    "NativeHistogram",
    "NativeHistograms",
    "NativeParts",
    "NativeSnapshot",
    "Spans",
    "add_histogram",
    "bucket_key",
    "buckets_at_min_schema",
    "downscale",
    "expand",
    "frac_bounds",
    "from_json",
    "make_snapshot",
    "merge",
    "merge_parts",
    "merged_snapshot",
    "native_cumulative",
    "parts_from_json",
    "parts_of",
    "parts_to_json",
    "quantile_points",
    "schema_for_factor",
    "spans_of",
    "subtract",
    "to_json",
]

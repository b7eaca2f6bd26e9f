"""What is done with a native histogram's snapshot once it is taken.

A scrape adds it to its metric family (:func:`add_histogram`, :class:`NativeFamily`); a merged
multi-worker scrape adds several workers' runs at the lowest schema among them
(:class:`NativeParts`, :func:`merge_parts`, :func:`merged_snapshot`); snapshot and compacted files
carry it as JSON; the summary subtracts an earlier copy for a window (:func:`subtract`) and reads
percentiles from its buckets (:func:`quantile_points`). The histogram itself, its buckets and its
snapshot type are in :mod:`asgi_perf._native`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import itemgetter, sub
from typing import Any, NamedTuple

from ._histogram import PlainHistogram
from ._native import (
    MAX_SCHEMA,
    MIN_SCHEMA,
    NativeSnapshot,
    Spans,
    downscale,
    expand,
    make_snapshot,
    spans_of,
)


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
    "NativeFamily",
    "NativeParts",
    "add_histogram",
    "from_json",
    "merge",
    "merge_parts",
    "merged_snapshot",
    "parts_from_json",
    "parts_of",
    "parts_to_json",
    "quantile_points",
    "subtract",
    "to_json",
]

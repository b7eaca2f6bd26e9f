"""The shared-memory run of one native histogram series (multi-worker mode).

A native series has a fixed run of float64 slots in its worker's file, like every shared series
(:mod:`asgi_perf._shared`), sized from its configuration, which its index line carries:

* the classic part, laid out as a classic histogram's: one count per ``le`` bucket (``+Inf``
  included; only ``+Inf`` when classic buckets are off), then the sum;
* a header: the *sequence* (even when the run is consistent, odd while the writer rewrites it),
  the zero bucket's count, and which of the two bucket areas is current (0 or 1);
* two bucket areas, each ``[schema, used, (code, count) * capacity]``: the populated buckets, in
  first-use order. ``code`` is ``index * 2`` for a positive bucket, ``index * 2 + 1`` for a
  negative one; ``used`` pairs are valid. A stored schema of 0 means the configured one: a new
  or forked (zeroed) file needs no initialisation.

An observation adds to a bucket's count in place (one store), or appends a pair and then bumps
``used``: a reader sees the bucket or not, never half of it. When the populated buckets pass
``max_buckets`` the writer lowers the schema (pairs of buckets merge, as
:meth:`~asgi_perf._native.NativeHistogram._reduce` does) and writes the result into the *other*
area, then flips the header to it, all under an odd sequence. Readers take no lock: they copy
the run and retry if the sequence was odd or moved (:func:`read_run`). Because the previous area
stays intact until the flip, a writer killed half-way through a rewrite (SIGKILL) leaves a run
that still reads whole: the area the header names is complete, before or after the change.

``capacity`` is ``max_buckets`` plus one (the bucket that triggers the rewrite), or, when the
zero threshold lets values reach more buckets at schema -4 than ``max_buckets`` (the schema
stops lowering there), that many plus one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ._native import (
    MAX_SCHEMA,
    MIN_SCHEMA,
    NativeSnapshot,
    buckets_at_min_schema,
)
from ._native_snapshots import NativeParts, merged_snapshot

#: The index line's native configuration: ``(schema, zero threshold, max_buckets)``.
NativeConfig = tuple[int, float, int]

#: Header slots after the classic part.
SEQ, ZERO, AREA = 0, 1, 2
HEADER = 3
#: Slots before an area's pairs: its schema and its number of used pairs.
AREA_HEADER = 2
#: A stored schema is ``schema + SCHEMA_BIAS`` (so never 0: 0 means "the configured one").
SCHEMA_BIAS = 1 - MIN_SCHEMA
ERR_SCHEMA = "the native series at slot {} holds schema {}, outside -4..8: the file is corrupt"
#: How often a reader re-copies a run it found mid-rewrite before it takes the copy as it is.
READ_RETRIES = 100


@dataclass(frozen=True, slots=True)
class NativeLayout:
    """Where each part of a native series' run is, relative to its first slot."""

    #: Classic buckets (``+Inf`` included); the sum follows them.
    buckets: int
    schema: int
    zero_threshold: float
    max_buckets: int
    #: Pairs per area.
    capacity: int

    @classmethod
    def of(cls, classic_bounds: int, config: NativeConfig) -> NativeLayout:
        schema, zero_threshold, max_buckets = config
        capacity = max(max_buckets, buckets_at_min_schema(zero_threshold)) + 1
        return cls(classic_bounds + 1, schema, zero_threshold, max_buckets, capacity)

    #: Offsets (relative) worked out once: a scrape reads thousands of runs.
    #: Slots of the classic part (buckets, then the sum).
    classic: int = field(init=False)
    seq: int = field(init=False)
    zero: int = field(init=False)
    area: int = field(init=False)
    #: The end of the header (the first area's first slot).
    head_end: int = field(init=False)
    #: The second area's first slot.
    second: int = field(init=False)

    def __post_init__(self) -> None:
        classic = self.buckets + 1
        for name, value in (
            ("classic", classic),
            ("seq", classic + SEQ),
            ("zero", classic + ZERO),
            ("area", classic + AREA),
            ("head_end", classic + HEADER),
            ("second", classic + HEADER + AREA_HEADER + 2 * self.capacity),
        ):
            object.__setattr__(self, name, value)

    def area_at(self, area: int) -> int:
        """The first slot (relative) of area 0 or 1."""
        return self.classic + HEADER + area * (AREA_HEADER + 2 * self.capacity)

    @property
    def size(self) -> int:
        return self.classic + HEADER + 2 * (AREA_HEADER + 2 * self.capacity)


def read_run(
    view: Any, start: int, layout: NativeLayout
) -> tuple[list[float], NativeSnapshot, bool]:
    """``(classic slots, native snapshot, torn)`` of the series at ``start``: :func:`read_parts`
    with the native part as a snapshot."""
    classic, parts, torn = read_parts(view, start, layout)
    return classic, merged_snapshot([parts]), torn


def read_parts(
    view: Any, start: int, layout: NativeLayout
) -> tuple[list[float], NativeParts, bool]:
    """``(classic slots, native parts, torn)`` of the series at ``start``, copied consistently.

    The copy is retried while the writer is rewriting (odd sequence) or rewrote meanwhile
    (sequence moved), :data:`READ_RETRIES` times at most; then the last copy is used as it is and
    ``torn`` is ``True``. That copy is still whole unless the writer rewrote *twice* while it was
    taken (the area it names is only reused by the rewrite after next), and it is exactly right
    when the writer died in the middle of a rewrite (the sequence then stays odd for good).

    The parts keep the bucket codes as stored (no spans): a scrape merging many workers builds
    spans once per merged series (:func:`asgi_perf._native_snapshots.merged_snapshot`).
    """
    seq_at = start + layout.seq
    # The first area starts right after the header: one copy takes the header and its header.
    first = start + layout.head_end
    head_end = first + AREA_HEADER
    second = start + layout.second
    flag = layout.area
    capacity = layout.capacity
    attempt = 0
    while True:
        before = view[seq_at]
        head = view[start:head_end].tolist()
        if head[flag]:
            area = second
            schema, used = view[second : second + AREA_HEADER].tolist()
        else:
            area = first
            schema, used = head[-AREA_HEADER:]
        used = int(used)
        if not 0 <= used <= capacity:
            used = min(max(used, 0), capacity)
        pairs = view[area + AREA_HEADER : area + AREA_HEADER + 2 * used].tolist()
        if before == view[seq_at] and not int(before) & 1:
            torn = False
            break
        if attempt == READ_RETRIES:
            torn = True
            break
        attempt += 1
        time.sleep(0)  # let the writer (another thread or process) finish its rewrite
    stored = int(schema)
    schema = stored - SCHEMA_BIAS if stored else layout.schema
    if not MIN_SCHEMA <= schema <= MAX_SCHEMA:
        raise ValueError(ERR_SCHEMA.format(start, schema))
    parts = _new_parts(
        NativeParts,
        (
            schema,
            layout.zero_threshold,
            int(head[layout.zero]),
            float(head[layout.buckets]),
            _pairs(pairs),
        ),
    )
    return head[: layout.classic], parts, torn


#: ``NativeParts(...)`` without its generated ``__new__`` (a Python call): a scrape makes one per
#: worker and series.
_new_parts = tuple.__new__


_is_whole = float.is_integer


def _pairs(stored: list[float]) -> list[float]:
    """The stored ``(code, count)`` pairs as :class:`~asgi_perf._native_snapshots.NativeParts`
    takes them: as they are when every value is a whole number and every count at least 1
    (checked in C), else converted pair by pair, pairs with no count left out."""
    if not stored or (min(stored[1::2]) >= 1 and all(map(_is_whole, stored))):
        return stored
    pairs: list[float] = []
    for i in range(0, len(stored), 2):
        count = int(stored[i + 1])
        if count > 0:
            pairs += (int(stored[i]), count)
    return pairs


__all__ = [
    "AREA_HEADER",
    "HEADER",
    "READ_RETRIES",
    "SCHEMA_BIAS",
    "NativeConfig",
    "NativeLayout",
    "read_parts",
    "read_run",
]

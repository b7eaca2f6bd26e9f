"""A native histogram in shared memory: the writer of its run.

In multi-worker mode a native histogram keeps its classic part in the worker's slots as a plain
shared histogram does, then its sparse buckets in a run of fixed size (the layout and the
lock-free reader are in :mod:`asgi_perf._native_layout`). This module writes that run: a new
bucket appends its ``(code, count)`` pair, and a schema drop rewrites the buckets into the spare
area and flips the header under the sequence lock, so a reader never sees half a rewrite and a
worker killed in the middle of one still leaves a complete area.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from math import frexp

from ._native import (
    INF,
    MAX_FRAC_EXP,
    MIN_SCHEMA,
    NativeHistograms,
    NativeSnapshot,
    downscale,
    frac_bounds,
    make_snapshot,
    native_cumulative,
)
from ._native_layout import (
    AREA_HEADER,
    SCHEMA_BIAS,
    NativeConfig,
    NativeLayout,
    read_run,
)
from ._shared import NATIVE, SharedPlainHistogram, SharedStore, StoreFull

ERR_AREA_FULL = "a native series has no room left for a new bucket ({} pairs); not counted"


class SharedNativeHistogram(SharedPlainHistogram):
    """A native histogram (:class:`~asgi_perf._native.NativeHistogram`) in shared memory.

    The classic part is :class:`SharedPlainHistogram`'s; the native buckets are appended as
    ``(code, count)`` pairs in first-use order (see :mod:`asgi_perf._native_layout`), with an
    in-process index code -> slot so an observation into a known bucket is one dict lookup and
    one store. Past ``max_buckets`` the schema drops and the buckets are rewritten into the spare
    area under the sequence lock. One writer per file (this process); writers within it
    serialise as for the plain class.
    """

    __slots__ = (
        "__weakref__",
        "_area",
        "_config",
        "_count_as",
        "_frac_bounds",
        "_layout",
        "_per_power",
        "_positions",
        "_schema",
        "_used",
        "_zero_threshold",
    )

    def __init__(
        self,
        bounds: tuple[float, ...],
        store: SharedStore,
        family: str,
        help_text: str,
        labels: Sequence[tuple[str, str]],
        *,
        native: NativeHistograms,
        count_as: Sequence[str] = (),
    ) -> None:
        super().__init__(bounds if native.classic else (), store, family, help_text, labels)
        assert native.schema is not None
        self._config: NativeConfig = (native.schema, native.zero_threshold, native.max_buckets)
        self._layout = NativeLayout.of(len(self.bounds), self._config)
        self._zero_threshold = native.zero_threshold
        self._count_as = tuple(count_as)
        self.forked()

    def forked(self) -> None:
        """Start over as a new series: a forked child's file is zeroed (and so at the start)."""
        self._positions: dict[int, int] = {}  # bucket code -> its count's slot
        self._used = 0
        self._area = 0
        self._set_schema(self._config[0])

    def _set_schema(self, schema: int) -> None:
        self._frac_bounds = frac_bounds(schema)
        self._per_power = len(self._frac_bounds)
        self._schema = schema

    def allocate(self) -> int:
        """The series' first slot, allocated now if it was not (``StoreFull`` if no room)."""
        slot = self._slot
        if slot < 0:
            slot = self._slot = self._store.allocate(
                self._family,
                NATIVE,
                self._help,
                self._labels,
                self.bounds,
                self._count_as,
                self._config,
            )
            self._store.forked.add(self)
        return slot

    def observe(self, value: float) -> None:
        slot = self._slot
        if slot < 0:
            slot = self.allocate()
        values = self._store.values
        layout = self._layout
        values[slot + bisect_left(self.bounds, value)] += 1
        values[slot + layout.buckets] += value
        threshold = self._zero_threshold
        if value > threshold:
            side = 0
        elif value < -threshold:
            side = 1
            value = -value
        else:
            values[slot + layout.zero] += 1  # NaN too, as NativeHistogram counts it
            return
        # NativeHistogram.observe's bucket index, inlined likewise.
        frac, exp = frexp(value)
        if frac == INF:  # infinity: the highest finite bucket, as NativeHistogram counts it
            frac, exp = MAX_FRAC_EXP
        per_power = self._per_power
        if per_power:
            key = bisect_left(self._frac_bounds, frac) + (exp - 1) * per_power
        else:
            if frac == 0.5:
                exp -= 1
            shift = -self._schema
            key = (exp + (1 << shift) - 1) >> shift
        code = (key << 1) | side
        at = self._positions.get(code)
        if at is None:
            self._append(code)
        else:
            values[at] += 1

    def _append(self, code: int) -> None:
        values = self._store.values
        layout = self._layout
        area = self._slot + layout.area_at(self._area)
        used = self._used
        if used >= layout.capacity:  # cannot happen (see NativeLayout.of): never write past it
            raise StoreFull(ERR_AREA_FULL.format(layout.capacity))
        at = area + AREA_HEADER + 2 * used
        values[at] = code
        values[at + 1] = 1
        # The pair first, then the count of pairs: a reader sees the bucket whole or not at all.
        values[area + 1] = used + 1
        self._used = used + 1
        self._positions[code] = at + 1
        if used + 1 > layout.max_buckets:
            self._reduce()

    def _reduce(self) -> None:
        """Lower the schema until the buckets fit (or -4), rewriting them into the spare area."""
        values = self._store.values
        positive: dict[int, int] = {}
        negative: dict[int, int] = {}
        for code, at in self._positions.items():
            (negative if code & 1 else positive)[code >> 1] = int(values[at])
        schema = self._schema
        limit = self._layout.max_buckets
        while len(positive) + len(negative) > limit and schema > MIN_SCHEMA:
            positive = downscale(positive, 1)
            negative = downscale(negative, 1)
            schema -= 1
        if schema == self._schema:
            return  # at -4 already: the run has room for every bucket there (see the layout)
        slot = self._slot
        layout = self._layout
        spare = 1 - self._area
        area = slot + layout.area_at(spare)
        positions: dict[int, int] = {}
        values[slot + layout.seq] += 1  # odd: readers retry until the rewrite is done
        values[area] = schema + SCHEMA_BIAS
        at = area + AREA_HEADER
        for side, buckets in ((0, positive), (1, negative)):
            for index, count in buckets.items():
                code = (index << 1) | side
                values[at] = code
                values[at + 1] = count
                positions[code] = at + 1
                at += 2
        values[area + 1] = len(positions)
        values[slot + layout.area] = spare  # the flip: one store
        values[slot + layout.seq] += 1  # even again
        self._positions = positions
        self._used = len(positions)
        self._area = spare
        self._set_schema(schema)

    def snapshot(self) -> NativeSnapshot:
        """The native part as it is now, read as any reader reads it (a scrape may race
        observations on another thread, or a rewrite)."""
        if self._slot < 0:
            return make_snapshot(self._config[0], self._zero_threshold, 0, 0.0, {}, {})
        return read_run(self._store.values, self._slot, self._layout)[1]

    def cumulative(self) -> tuple[list[tuple[str, float]], float, int]:
        """As :meth:`asgi_perf._native.NativeHistogram.cumulative`: native only, the native
        buckets' upper bounds as ``le`` pairs."""
        if self.bounds:
            return super().cumulative()
        return native_cumulative(self.snapshot())


__all__ = ["ERR_AREA_FULL", "SharedNativeHistogram"]

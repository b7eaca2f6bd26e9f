"""Every worker's shared-memory series, read into the merged families.

Each worker's counters and histograms live in its ``.slots`` file, described by its append-only
``.keys`` index (see :mod:`asgi_perf._shared`). :class:`SharedReader` parses each index line once,
works out its exposition sample keys once per distinct series, and at each scrape reads the slot
values as they are at that instant (native histograms under their sequence lock, see
:mod:`asgi_perf._native_layout`). :func:`read_shared` and :func:`fold` read one worker's file
whole, for compaction.
"""

from __future__ import annotations

import os
from itertools import accumulate
from pathlib import Path
from typing import Any

from .. import _shared as shared
from .._native_layout import read_parts
from .._native_snapshots import NativeParts, parts_of
from ._mp_snapshot import Families, LabelKey, Natives


class _Plan:
    """What one series adds to the merged families, worked out once: its exposition sample keys
    (and, for a histogram exposed as a counter too, that counter's key). One object per distinct
    series, shared by every worker's index line that names it."""

    __slots__ = (
        "count_family",
        "count_help",
        "count_key",
        "family",
        "help",
        "ident",
        "keys",
        "kind",
        "layout",
        "native_key",
    )

    def __init__(self, entry: shared.IndexEntry) -> None:
        self.ident = _identity(entry)
        self.family, self.help = entry.family, entry.help
        self.kind = shared.family_type(entry.kind)
        #: A native histogram's run layout (its native part is read under the sequence lock).
        self.layout = entry.layout()
        self.native_key: LabelKey = tuple(sorted(entry.labels))
        labels = dict(entry.labels)
        self.keys = tuple(
            (name, tuple(sorted({**labels, **extra}.items())))
            for name, extra, _ in shared.expand(
                entry.family, entry.kind, entry.bounds, [0.0] * entry.size, 0
            )
        )
        self.count_family = self.count_help = ""
        self.count_key: tuple[str, LabelKey] = ("", ())
        if entry.count_as and self.kind == shared.HISTOGRAM:
            self.count_family, self.count_help = entry.count_as[0], entry.count_as[1]
            self.count_key = (f"{self.count_family}_total", tuple(sorted(labels.items())))


def _identity(entry: shared.IndexEntry) -> tuple[Any, ...]:
    return (
        entry.family,
        entry.kind,
        entry.help,
        entry.labels,
        entry.bounds,
        entry.count_as,
        entry.native,
    )


class _Parsed:
    """One worker's index as read so far (the file only grows)."""

    __slots__ = ("entries", "inode", "offset")

    def __init__(self, inode: int) -> None:
        self.inode = inode
        self.offset = 0
        self.entries: list[tuple[int, int, _Plan]] = []  # (first slot, slots, plan)


class SharedReader:
    """Reads every worker's shared-memory series for the merged view.

    Index files are append-only, so each line is parsed, and its samples' exposition keys worked
    out, once; a scrape reads the new lines and the slot values. Every worker's values of one
    series are gathered first and added to the families together, so a sample key is looked up
    once per scrape, not once per worker. The totals are what adding each worker's samples one
    by one gives (:func:`asgi_perf._shared.read_worker`), added in the same order.
    """

    def __init__(self) -> None:
        self._files: dict[Path, _Parsed] = {}
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        #: Native series read mid-rewrite after every retry (taken as read), since created.
        self.torn = 0

    def merge(
        self,
        families: Families,
        directory: Path,
        skip: frozenset[str] = frozenset(),
        natives: Natives | None = None,
    ) -> list[tuple[Path, Exception]]:
        failed: list[tuple[Path, Exception]] = []
        seen: dict[Path, _Parsed] = {}
        # One entry per distinct series, in order of first appearance: worker by worker.
        gathered: dict[_Plan, list[list[float]]] = {}
        #: Each series' list of native parts in ``natives``, by plan.
        parts: dict[_Plan, list[NativeParts]] = {}
        for keys in shared.worker_files(directory):
            if keys.name in skip:
                continue
            # Read whole before merging: a file that fails part-way adds nothing, as reported.
            try:
                parsed, values, snaps = self._read(keys)
            except SHARED_ERRORS as exc:
                failed.append((keys, exc))
                continue
            if parsed is None:
                continue
            seen[keys] = parsed
            for (_, _, plan), slots in zip(parsed.entries, values, strict=True):
                vectors = gathered.get(plan)
                if vectors is None:
                    gathered[plan] = [slots]
                else:
                    vectors.append(slots)
            if natives is not None:
                for plan, snap in snaps:
                    into = parts.get(plan)
                    if into is None:
                        # Plans that name one series share its list: parts stay in worker order.
                        series = natives.setdefault(plan.family, {})
                        into = parts[plan] = series.setdefault(plan.native_key, [])
                    into.append(snap)
        if seen.keys() != self._files.keys():
            # Files were compacted away: forget the series only they named.
            self._plans = {
                plan.ident: plan for parsed in seen.values() for _, _, plan in parsed.entries
            }
        self._files = seen
        for plan, vectors in gathered.items():
            _add_gathered(families, plan, vectors)
        return failed

    def _plan(self, entry: shared.IndexEntry) -> _Plan:
        ident = _identity(entry)
        plan = self._plans.get(ident)
        if plan is None:
            plan = self._plans[ident] = _Plan(entry)
        return plan

    def _read(
        self, keys: Path
    ) -> tuple[_Parsed | None, list[list[float]], list[tuple[_Plan, NativeParts]]]:
        try:
            with open(keys, "rb") as f:
                stat = os.fstat(f.fileno())
                parsed = self._files.get(keys)
                if parsed is None or parsed.inode != stat.st_ino or stat.st_size < parsed.offset:
                    parsed = _Parsed(stat.st_ino)
                f.seek(parsed.offset)
                raw = f.read()
        except FileNotFoundError:
            return None, [], []
        mapped = shared.map_slots(keys)
        if mapped is None:
            return None, [], []
        snaps: list[tuple[_Plan, NativeParts]] = []
        try:
            complete = shared.complete_lines(raw)
            if complete:
                fresh = _Parsed(parsed.inode)
                fresh.offset = parsed.offset + len(complete)
                fresh.entries = list(parsed.entries)
                for entry in shared.parse_index(complete):
                    fresh.entries.append((entry.start, entry.size, self._plan(entry)))
                parsed = fresh
            view: Any = memoryview(mapped).cast("d")
            try:
                values: list[list[float]] = []
                end = len(view)
                for start, size, plan in parsed.entries:
                    if start + size > end:
                        raise IndexError(f"slot {start + size} is past the end of the file")
                    layout = plan.layout
                    if layout is None:
                        values.append(view[start : start + size].tolist())
                        continue
                    part, snap, torn = read_parts(view, start, layout)
                    self.torn += torn
                    values.append(part)
                    snaps.append((plan, snap))
            finally:
                view.release()
        finally:
            mapped.close()
        return parsed, values, snaps


def _add_gathered(families: Families, plan: _Plan, vectors: list[list[float]]) -> None:
    """Add every worker's slots of one series (worker by worker) to ``families``.

    Bucket counts only ever grow by whole increments, so they are summed over the workers
    before the cumulative counts are formed: the same integers as adding each worker's
    cumulative counts. Sums and counter values are added worker by worker, in order, as the
    sample-by-sample merge added them.
    """
    entry = families.get(plan.family)
    if entry is None:
        entry = families[plan.family] = (plan.kind, plan.help, {})
    histogram = plan.kind == shared.HISTOGRAM
    count = 0.0
    if entry[0] == plan.kind:
        target = entry[2]
        keys = plan.keys
        if histogram:
            buckets = len(keys) - 2
            if len(vectors) == 1:
                counts = vectors[0][:buckets]
            else:
                counts = [
                    sum(column) for column in zip(*(v[:buckets] for v in vectors), strict=True)
                ]
            cumulative = list(accumulate(counts))
            count = cumulative[-1]
            cumulative.append(count)
            for key, value in zip(keys, cumulative, strict=False):
                target[key] = target.get(key, 0.0) + value
            key = keys[-1]
            total = target.get(key, 0.0)
            for vector in vectors:
                total += vector[buckets]
            target[key] = total
        else:
            for i, key in enumerate(keys):
                total = target.get(key, 0.0)
                for vector in vectors:
                    total += vector[i]
                target[key] = total
    if plan.count_family and histogram:
        if entry[0] != plan.kind:
            buckets = len(plan.keys) - 2
            count = sum(sum(v[:buckets]) for v in vectors)
        entry = families.get(plan.count_family)
        if entry is None:
            entry = families[plan.count_family] = ("counter", plan.count_help, {})
        if entry[0] == "counter":
            counts_of = entry[2]
            counts_of[plan.count_key] = counts_of.get(plan.count_key, 0.0) + count


# OverflowError: int() of an infinity where a count or bucket code was expected.
SHARED_ERRORS = (ValueError, TypeError, IndexError, OSError, OverflowError)


def read_shared(keys: Path) -> tuple[Families, Natives]:
    """One worker's shared-memory series as families (and native parts); raises if any part
    cannot be read."""
    part: Families = {}
    natives: Natives = {}
    for series in shared.read_worker(keys):
        _add_series(part, series)
        if series.native is not None:
            key = tuple(sorted(series.labels))
            parts = parts_of(series.native)
            natives.setdefault(series.family, {}).setdefault(key, []).append(parts)
    return part, natives


def fold(families: Families, part: Families) -> None:
    for name, (typ, help_text, values) in part.items():
        _add(families, name, typ, help_text, {}, [])
        for (sample, labels), value in values.items():
            _add(families, name, typ, help_text, dict(labels), [(sample, {}, value)])


def _add_series(families: Families, series: shared.Series) -> None:
    labels = dict(series.labels)
    samples = list(shared.expand(series.family, series.kind, series.bounds, series.values, 0))
    kind = shared.family_type(series.kind)
    _add(families, series.family, kind, series.help, labels, samples)
    if series.count_as and kind == shared.HISTOGRAM:
        name, help_text = series.count_as[0], series.count_as[1]
        count = samples[-2][2]  # the histogram's _count
        _add(families, name, "counter", help_text, labels, [(f"{name}_total", {}, count)])


def _add(
    families: Families,
    name: str,
    typ: str,
    help_text: str,
    labels: dict[str, str],
    samples: list[tuple[str, dict[str, str], float]],
) -> None:
    entry = families.get(name)
    if entry is None:
        entry = families[name] = (typ, help_text, {})
    elif entry[0] != typ:
        return
    values = entry[2]
    for sample_name, extra, value in samples:
        key = (sample_name, tuple(sorted({**labels, **extra}.items())))
        values[key] = values.get(key, 0.0) + value


__all__ = ["SHARED_ERRORS", "SharedReader", "fold", "read_shared"]

"""Per-worker files and their merge: the storage half of multi-worker mode.

Each worker keeps its counters and histograms in shared memory (``asgi_perf_<pid>_<token>.slots``
with its ``.keys`` index, see :mod:`asgi_perf._shared`) and writes everything else its registry
would expose into ``asgi_perf_<pid>_<token>.json`` (atomically: write a temporary file, then
rename). A scrape in any worker merges every file in the directory: counter-like samples
(counters, histograms, summaries) are summed over every worker that ever ran, gauges over live
workers only, each by its mode. Dead workers' files are *compacted*: their counter-like samples
are folded into one ``asgi_perf_compacted.json`` and the files removed, so the scrape reads one
set of files per live worker plus one, however many workers have come and gone.

Readers take a shared ``flock`` on ``asgi_perf.lock``, compaction an exclusive one, so a scrape
never sees a dead worker's counts both folded and still in its own file (or in neither): totals
never go backwards. Live workers replace their own snapshot without the lock (rename is atomic)
and write their slots in place.

Native histograms travel beside the samples: a snapshot file (the compacted one included) lists
each native series' buckets under ``native``, and the merge gathers every worker's native parts
of one series (:data:`Natives`) and adds them at the lowest schema among them; :func:`to_metrics`
attaches the result to its family as the protobuf encoder expects (``family.native``). Each
worker's part is read as bucket counts by code
(:class:`~asgi_perf._native_snapshots.NativeParts`, straight from the shared-memory run or the
snapshot file's lists), so the spans the exposition needs are built once per merged series, not
once per worker and then expanded again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from .. import _shared as shared
from .._native import NativeSnapshot
from .._native_layout import read_parts
from .._native_snapshots import (
    NativeFamily,
    NativeParts,
    merge_parts,
    merged_snapshot,
    parts_from_json,
    parts_of,
    parts_to_json,
    to_json,
)
from ..catalogue import STANDARD_METRICS

PREFIX = "asgi_perf_"
COMPACTED = "asgi_perf_compacted.json"
LOCK = "asgi_perf.lock"

#: Families whose samples add up across workers, dead ones included.
SUMMED_TYPES = frozenset({"counter", "histogram", "summary"})
#: prometheus_client's process, platform and GC families (as collected, a counter without its
#: ``_total``): one series per live worker with a ``pid`` label, never summed. CPU seconds, memory,
#: start times and file-descriptor limits of different processes add up to nothing one can read,
#: and a dead worker's would stay in the totals forever; a live worker's own series can be read
#: (``sum by (instance)``, ``max``) and vanish with it, so their number stays the worker count.
PER_WORKER = frozenset(
    name.removesuffix("_total") if spec.kind == "counter" else name
    for name, spec in STANDARD_METRICS.items()
)
#: How a gauge is merged across live workers.
GAUGE_MODES = frozenset({"livesum", "livemax", "livemin", "liveall"})

LabelKey = tuple[tuple[str, str], ...]
# family name -> (type, help, {(sample name, labels): value}); insertion-ordered.
Families = dict[str, tuple[str, str, dict[tuple[str, LabelKey], float]]]
#: family name -> {sorted series labels: every worker's native part of that series}.
Natives = dict[str, dict[LabelKey, list[NativeParts]]]


@dataclass
class Snapshot:
    """One worker's published state."""

    pid: int
    token: str
    families: list[Any] = field(default_factory=list)
    #: ``[family, sorted label pairs, native parts]`` per native histogram series.
    native: list[tuple[str, LabelKey, NativeParts]] = field(default_factory=list)


def snapshot_name(pid: int, token: str) -> str:
    return f"{PREFIX}{pid}_{token}.json"


def encode(pid: int, token: str, metrics: Iterable[Metric]) -> bytes:
    """Serialise collected metric families (timestamps and exemplars are not carried over; the
    native part of a histogram is)."""
    families = []
    native: list[Any] = []
    for m in metrics:
        families.append(
            [
                m.name,
                m.type,
                m.documentation,
                [[s.name, sorted(s.labels.items()), s.value] for s in m.samples],
            ]
        )
        parts: NativeFamily | None = getattr(m, "native", None)
        if parts is not None and m.type == "histogram":
            native.extend(
                [m.name, [list(pair) for pair in key], to_json(snap)]
                for key, snap in parts.series.items()
            )
    body: dict[str, Any] = {"pid": pid, "token": token, "families": families}
    if native:
        body["native"] = native
    return json.dumps(body).encode()


class CorruptSnapshot(ValueError):
    """A file in the directory is not a readable snapshot (corrupt, truncated, unreadable)."""


def decode(data: bytes) -> Snapshot:
    """The snapshot in ``data``, checked in full; :class:`CorruptSnapshot` for anything else.

    Every field is checked and converted here, so merging a snapshot cannot fail half-way and
    leave part of a corrupt file in the totals.
    """
    try:
        raw = json.loads(data)
        families = [
            [
                _text(name),
                _text(typ),
                _text(help_text),
                [
                    [_text(sample), _labels(labels), _number(value)]
                    for sample, labels, value in _array(samples)
                ],
            ]
            for name, typ, help_text, samples in _array(raw["families"])
        ]
        native = [
            (_text(name), tuple((k, v) for k, v in _labels(labels)), parts_from_json(snap))
            for name, labels, snap in _array(raw.get("native", []))
        ]
        return Snapshot(int(raw["pid"]), _text(raw["token"]), families, native)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptSnapshot(f"{type(exc).__name__}: {exc}") from exc


def _array(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {type(value).__name__}")
    return value


def _labels(value: Any) -> list[list[str]]:
    return [[_text(k), _text(v)] for k, v in _array(value)]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(directory: Path, exclusive: bool) -> Iterator[None]:
    with open(directory / LOCK, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, just not ours to signal
        return True
    return True


def snapshot_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob(f"{PREFIX}*_*.json") if parse_name(p) is not None)


def parse_name(path: Path) -> tuple[int, str] | None:
    """``(pid, token)`` from a snapshot file name, ``None`` for anything else."""
    stem = path.name[len(PREFIX) : -len(".json")]
    pid, _, token = stem.partition("_")
    if not pid.isdigit() or not token:
        return None
    return int(pid), token


def dead_files(directory: Path, files: list[Path], own_pid: int) -> list[Path]:
    """Files whose writer is gone: its pid is not running, or it reused a pid a newer writer has."""
    newest: dict[int, str] = {}
    parsed: list[tuple[Path, int, str]] = []
    for path in files:
        pid, token = parse_name(path) or (0, "")
        parsed.append((path, pid, token))
        # Tokens are zero-padded start times, so the newest writer of a pid sorts last.
        newest[pid] = max(token, newest.get(pid, ""))
    return [
        path
        for path, pid, token in parsed
        if token != newest[pid] or (pid != own_pid and not pid_alive(pid))
    ]


def merge_into(
    families: Families,
    snapshot: Snapshot,
    live: bool,
    gauge_modes: dict[str, str],
    natives: Natives | None = None,
) -> None:
    """Add one worker's families to ``families`` (gauges only when the worker is ``live``), and
    its native histogram parts to ``natives``."""
    if natives is not None:
        for family, series, snap in snapshot.native:
            natives.setdefault(family, {}).setdefault(series, []).append(snap)
    for name, typ, help_text, samples in snapshot.families:
        per_worker = name in PER_WORKER
        summed = typ in SUMMED_TYPES and not per_worker
        if not summed and not live:
            continue
        entry = families.get(name)
        if entry is None:
            entry = families[name] = (typ, help_text, {})
        elif entry[0] != typ:
            continue  # a family that changed type between versions: keep the first seen
        values = entry[2]
        mode = "sum" if summed else "liveall" if per_worker else gauge_modes.get(name, "livesum")
        for sample_name, labels, value in samples:
            label_key: LabelKey = tuple((str(k), str(v)) for k, v in labels)
            if mode == "liveall":
                label_key = (*label_key, ("pid", str(snapshot.pid)))
            key = (sample_name, label_key)
            old = values.get(key)
            if old is None:
                values[key] = float(value)
            elif sample_name.endswith("_created"):
                values[key] = min(old, float(value))  # the earliest worker's start
            elif mode in ("sum", "livesum"):
                values[key] = old + value
            elif mode == "livemax":
                values[key] = max(old, value)
            elif mode == "livemin":
                values[key] = min(old, value)


_new_sample = tuple.__new__
#: Sample's optional fields (timestamp, exemplar and, on newer clients, native_histogram).
_SAMPLE_TAIL = (None,) * (len(Sample._fields) - 3)


def to_metrics(families: Families, natives: Natives | None = None) -> Iterator[Metric]:
    """The merged families as metrics; a histogram with native parts carries them merged (every
    worker's, at the lowest schema among them) as its ``native`` attribute."""
    for name, (typ, help_text, values) in families.items():
        metric = Metric(name, help_text, typ)
        # What add_sample() appends, without a Python-level call per sample: Sample is a named
        # tuple, and its generated __new__ costs more than the tuple itself.
        metric.samples = [
            _new_sample(Sample, (s, dict(labels), value, *_SAMPLE_TAIL))
            for (s, labels), value in values.items()
        ]
        parts = natives.get(name) if natives and typ == "histogram" else None
        if parts:
            native = NativeFamily()
            native.series = merged_natives(parts)
            metric.native = native  # type: ignore[attr-defined]
        yield metric


def merged_natives(parts: dict[LabelKey, list[NativeParts]]) -> dict[LabelKey, NativeSnapshot]:
    """One snapshot per series: its workers' parts added up (spans built once, here)."""
    merged = merged_snapshot
    return {key: merged(each) for key, each in parts.items()}


def summed_snapshot(families: Families) -> list[Any]:
    """The counter-like part of ``families`` in snapshot form (what compaction keeps)."""
    return [
        [name, typ, help_text, [[s, list(labels), v] for (s, labels), v in values.items()]]
        for name, (typ, help_text, values) in families.items()
        if typ in SUMMED_TYPES
    ]


def native_snapshot(natives: Natives) -> list[Any]:
    """``natives`` merged, in snapshot form (what compaction keeps)."""
    return [
        [name, [list(pair) for pair in key], parts_to_json(merge_parts(each))]
        for name, parts in natives.items()
        for key, each in parts.items()
    ]


def load(path: Path) -> Snapshot | None:
    """The snapshot in ``path``; ``None`` when it vanished (compacted or replaced meanwhile).

    :class:`CorruptSnapshot` when the file cannot be read (a directory in its place, no
    permission, an I/O error) or is not a whole snapshot.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptSnapshot(f"cannot read: {type(exc).__name__}: {exc}") from exc
    return decode(data)


def compact(directory: Path, dead: list[Path], dead_shared: Iterable[Path] = ()) -> int:
    """Fold ``dead`` workers' counter-like samples into the compacted file; remove their files.

    ``dead_shared``: index files of dead workers' shared-memory series, folded the same way (with
    their slot files). Call under the exclusive lock. Crash-safe: the compacted file lists the
    files it already holds, and those are skipped (and removed) by every later reader, so a crash
    between the rename and the removals cannot count a worker twice. Returns how many files were
    folded.
    """
    compacted_path = directory / COMPACTED
    base = load(compacted_path)  # CorruptSnapshot: nothing is folded until it is repaired
    families: Families = {}
    natives: Natives = {}
    done: list[str] = []
    if base is not None:
        merge_into(families, base, live=False, gauge_modes={}, natives=natives)
        done = [n for n in base.token.split("/") if n and (directory / n).exists()]
    folded = []
    for path in dead:
        if path.name in done:
            continue
        try:
            snap = load(path)
        except CorruptSnapshot:
            continue  # left in place: the reader skips it and reports it
        if snap is None:
            continue
        merge_into(families, snap, live=False, gauge_modes={}, natives=natives)
        folded.append(path.name)
    for keys in dead_shared:
        if keys.name in done:
            continue
        try:
            part, part_natives = _read_shared(keys)
        except _SHARED_ERRORS:
            continue  # left in place: every scrape skips it and counts the error
        _fold(families, part)
        for name, series in part_natives.items():
            into = natives.setdefault(name, {})
            for key, snaps in series.items():
                into.setdefault(key, []).extend(snaps)
        folded.append(keys.name)
    if folded:
        # The "token" field of the compacted file lists the files it holds until they are gone.
        listed = "/".join([*done, *folded])
        body: dict[str, Any] = {"pid": 0, "token": listed, "families": summed_snapshot(families)}
        if natives:
            body["native"] = native_snapshot(natives)
        write_atomic(compacted_path, json.dumps(body).encode())
    for name in [*done, *folded]:
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
        if name.endswith(shared.KEYS_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                shared.slots_path(directory / name).unlink()
    return len(folded)


def dead_shared_files(directory: Path, own_pid: int) -> list[Path]:
    """Index files of shared-memory series whose writer's pid no longer runs."""
    return [
        path
        for path in shared.worker_files(directory)
        if (pid := shared.writer_pid(path)) is not None and pid != own_pid and not pid_alive(pid)
    ]


def folded_names(compacted: Snapshot | None) -> frozenset[str]:
    if compacted is None:
        return frozenset()
    return frozenset(n for n in compacted.token.split("/") if n)


def merge_shared(
    families: Families,
    directory: Path,
    skip: frozenset[str] = frozenset(),
    reader: SharedReader | None = None,
    natives: Natives | None = None,
) -> list[tuple[Path, Exception]]:
    """Add every worker's shared-memory series (dead workers' not yet compacted included).

    These are read as they are at this instant: nothing a worker counted is missing or stale.
    ``skip``: index files the compacted file already holds. ``reader``: the one that read the
    previous scrape, so each index line is parsed once. ``natives``: where native histogram
    parts go (left out without it). Returns the index files that could not be read (skipped),
    with their errors.
    """
    return (reader or SharedReader()).merge(families, directory, skip, natives)


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
            except _SHARED_ERRORS as exc:
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
_SHARED_ERRORS = (ValueError, TypeError, IndexError, OSError, OverflowError)


def _read_shared(keys: Path) -> tuple[Families, Natives]:
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


def _fold(families: Families, part: Families) -> None:
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

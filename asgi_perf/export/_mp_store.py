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

This module holds the files, the lock, the merge and compaction; a snapshot file's format is in
:mod:`asgi_perf.export._mp_snapshot`, the reading of shared memory in
:mod:`asgi_perf.export._mp_shared`, and the names the rest of the package uses are here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from .. import _shared as shared
from .._native import NativeSnapshot
from .._native_snapshots import (
    NativeFamily,
    NativeParts,
    merge_parts,
    merged_snapshot,
    parts_to_json,
)
from ..catalogue import STANDARD_METRICS
from ._mp_shared import SHARED_ERRORS, SharedReader, fold, read_shared
from ._mp_snapshot import (
    PREFIX,
    CorruptSnapshot,
    Families,
    LabelKey,
    Natives,
    Snapshot,
    decode,
    encode,
    snapshot_name,
)

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
    data = _read(path)
    return None if data is None else decode(data)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptSnapshot(f"cannot read: {type(exc).__name__}: {exc}") from exc


class SnapshotCache:
    """:func:`load` for every scrape: a file's decoded snapshot is reused while it holds the same
    bytes.

    A live worker rewrites its file only when its snapshot changed, and the compacted file
    changes only at compaction, so a scrape mostly reads what the previous one read: comparing
    the bytes costs a fraction of decoding and checking them again. The key is the content, never
    the inode or mtime (a rename frees an inode for the next file at once, and mtimes are as
    coarse as the kernel's tick), so a changed file is never served stale; a file that fails to
    decode is not kept, and fails (and is counted) at every scrape.

    Only what :meth:`retain` names is kept (the caller passes the live workers' files and the
    compacted one, not dead workers' files waiting for compaction), so memory is bounded by
    those: about ten times their size on disk, as decoded lists. Scrapes may run at once (each in
    a thread): an entry is one ``(bytes, snapshot)`` tuple, read without a lock; adding one and
    :meth:`retain` take the lock.
    """

    def __init__(self) -> None:
        self._kept: dict[Path, tuple[bytes, Snapshot]] = {}
        self._lock = threading.Lock()

    def load(self, path: Path, keep: bool = True) -> Snapshot | None:
        """:func:`load`, through what is kept; ``keep=False`` reads a file without keeping it."""
        data = _read(path)
        if data is None:
            return None
        kept = self._kept.get(path)
        if kept is not None and kept[0] == data:
            return kept[1]
        snap = decode(data)
        if keep:
            with self._lock:
                self._kept[path] = (data, snap)
        return snap

    def retain(self, paths: Collection[Path]) -> None:
        """Forget every file but ``paths`` (those compacted, removed or dead since)."""
        with self._lock:
            kept = self._kept
            if kept.keys() - paths:
                self._kept = {path: kept[path] for path in paths if path in kept}


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
            part, part_natives = read_shared(keys)
        except SHARED_ERRORS:
            continue  # left in place: every scrape skips it and counts the error
        fold(families, part)
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


__all__ = [
    "COMPACTED",
    "GAUGE_MODES",
    "LOCK",
    "PER_WORKER",
    "PREFIX",
    "SUMMED_TYPES",
    "CorruptSnapshot",
    "Families",
    "LabelKey",
    "Natives",
    "SharedReader",
    "Snapshot",
    "SnapshotCache",
    "compact",
    "dead_files",
    "dead_shared_files",
    "decode",
    "encode",
    "folded_names",
    "load",
    "locked",
    "merge_into",
    "merge_shared",
    "merged_natives",
    "native_snapshot",
    "parse_name",
    "pid_alive",
    "snapshot_files",
    "snapshot_name",
    "summed_snapshot",
    "to_metrics",
    "write_atomic",
]

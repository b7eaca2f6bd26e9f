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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric

from .. import _shared as shared
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


@dataclass
class Snapshot:
    """One worker's published state."""

    pid: int
    token: str
    families: list[Any] = field(default_factory=list)


def snapshot_name(pid: int, token: str) -> str:
    return f"{PREFIX}{pid}_{token}.json"


def encode(pid: int, token: str, metrics: Iterable[Metric]) -> bytes:
    """Serialise collected metric families (timestamps and exemplars are not carried over)."""
    families = [
        [
            m.name,
            m.type,
            m.documentation,
            [[s.name, sorted(s.labels.items()), s.value] for s in m.samples],
        ]
        for m in metrics
    ]
    return json.dumps({"pid": pid, "token": token, "families": families}).encode()


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
        return Snapshot(int(raw["pid"]), _text(raw["token"]), families)
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
) -> None:
    """Add one worker's families to ``families`` (gauges only when the worker is ``live``)."""
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


def to_metrics(families: Families) -> Iterator[Metric]:
    for name, (typ, help_text, values) in families.items():
        metric = Metric(name, help_text, typ)
        for (sample_name, labels), value in values.items():
            metric.add_sample(sample_name, dict(labels), value)
        yield metric


def summed_snapshot(families: Families) -> list[Any]:
    """The counter-like part of ``families`` in snapshot form (what compaction keeps)."""
    return [
        [name, typ, help_text, [[s, list(labels), v] for (s, labels), v in values.items()]]
        for name, (typ, help_text, values) in families.items()
        if typ in SUMMED_TYPES
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
    done: list[str] = []
    if base is not None:
        merge_into(families, base, live=False, gauge_modes={})
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
        merge_into(families, snap, live=False, gauge_modes={})
        folded.append(path.name)
    for keys in dead_shared:
        if keys.name in done:
            continue
        try:
            part = _read_shared(keys)
        except _SHARED_ERRORS:
            continue  # left in place: every scrape skips it and counts the error
        _fold(families, part)
        folded.append(keys.name)
    if folded:
        # The "token" field of the compacted file lists the files it holds until they are gone.
        listed = "/".join([*done, *folded])
        body = {"pid": 0, "token": listed, "families": summed_snapshot(families)}
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
    families: Families, directory: Path, skip: frozenset[str] = frozenset()
) -> list[tuple[Path, Exception]]:
    """Add every worker's shared-memory series (dead workers' not yet compacted included).

    These are read as they are at this instant: nothing a worker counted is missing or stale.
    ``skip``: index files the compacted file already holds. Returns the index files that could
    not be read (skipped), with their errors.
    """
    failed: list[tuple[Path, Exception]] = []
    for keys in shared.worker_files(directory):
        if keys.name in skip:
            continue
        # Read whole before merging: a file that fails part-way adds nothing, as reported.
        try:
            part = _read_shared(keys)
        except _SHARED_ERRORS as exc:
            failed.append((keys, exc))
            continue
        _fold(families, part)
    return failed


_SHARED_ERRORS = (ValueError, TypeError, IndexError, OSError)


def _read_shared(keys: Path) -> Families:
    """One worker's shared-memory series as families; raises if any part cannot be read."""
    part: Families = {}
    for series in shared.read_worker(keys):
        _add_series(part, series)
    return part


def _fold(families: Families, part: Families) -> None:
    for name, (typ, help_text, values) in part.items():
        _add(families, name, typ, help_text, {}, [])
        for (sample, labels), value in values.items():
            _add(families, name, typ, help_text, dict(labels), [(sample, {}, value)])


def _add_series(families: Families, series: shared.Series) -> None:
    labels = dict(series.labels)
    samples = list(shared.expand(series.family, series.kind, series.bounds, series.values, 0))
    _add(families, series.family, series.kind, series.help, labels, samples)
    if series.count_as and series.kind == shared.HISTOGRAM:
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

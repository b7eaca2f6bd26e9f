"""Per-worker shared-memory counters: what makes multi-worker totals exact at every scrape.

In multi-worker mode every counter and histogram that a worker records on its hot paths lives in
a file it maps into memory, so another worker's scrape reads the value as it is *now*, and a
worker killed with SIGKILL loses nothing it had counted (the pages belong to the file, not to the
process). The same idea as prometheus_client's multiprocess mode, laid out for increments that
cost one indexed store:

* ``asgi_perf_<pid>_<token>.slots``: a sparse file of float64 slots, mapped ``MAP_SHARED``. A
  series gets a fixed run of slots on first use (a counter 1; a histogram one per bucket,
  non-cumulative, then its sum; a summary its count then its sum) and keeps it for its life.
* ``asgi_perf_<pid>_<token>.keys``: the append-only index, one JSON line per series giving its
  first slot, its family, type, help, label names and values (and a histogram's bounds; a native
  histogram's schema, zero threshold and bucket limit). A line is written (one ``write`` to an
  ``O_APPEND`` file) before the series' first increment, so every value a reader can miss is
  still zero.

A native histogram (kind ``native``) keeps its classic part as a histogram does, then its sparse
buckets in a run of fixed size, rewritten under a sequence lock when its schema drops (the run's
layout and reader are in :mod:`asgi_perf._native_layout`, its writer in
:mod:`asgi_perf._shared_native`).

Readers (any worker's scrape, see :mod:`asgi_perf.export`) read every worker's pair, alive or
dead, and sum: a dead worker's counts stay in the total, like prometheus_client's files of dead
pids. Gauges are not kept here: they are read from their owners at scrape time and published.

A child process forked after series were allocated (gunicorn ``--preload``) gets files of its own
at the same slot offsets, zeroed: the parent's counts stay in the parent's files, counted once.
"""

from __future__ import annotations

import json
import mmap
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._histogram import PlainHistogram, bucket_labels
from ._native import (
    NativeSnapshot,
)
from ._native_layout import (
    NativeConfig,
    NativeLayout,
    read_run,
)

PREFIX = "asgi_perf_"
SLOTS_SUFFIX = ".slots"
KEYS_SUFFIX = ".keys"
#: Slots per worker file (float64 each; the file is sparse: only pages in use take memory).
DEFAULT_CAPACITY = 1 << 21
#: ... for a registry with native histograms, whose series take a run of ~666 slots each by
#: default (the bucket areas: pages are only touched as buckets fill).
NATIVE_CAPACITY = 1 << 23

ERR_FULL = "the shared-memory file of this worker is full ({} slots); the series is kept locally"

#: How many slots a series of each type takes, given its bucket count.
COUNTER, HISTOGRAM, SUMMARY = "counter", "histogram", "summary"
#: A histogram with native buckets (exposed as a histogram).
NATIVE = "native"


def slots_for(kind: str, bounds: Sequence[float] = (), native: NativeConfig | None = None) -> int:
    if kind == HISTOGRAM:
        return len(bounds) + 2  # one per bucket (+Inf included), then the sum
    if kind == NATIVE:
        assert native is not None
        return NativeLayout.of(len(bounds), native).size
    if kind == SUMMARY:
        return 2  # count, sum
    return 1


def family_type(kind: str) -> str:
    """The exposition type of a series kind (a native histogram is a histogram)."""
    return HISTOGRAM if kind == NATIVE else kind


class StoreFull(RuntimeError):
    """No slot left in this worker's file."""


class SharedStore:
    """One worker's pair of files in ``directory``: slots are allocated, never freed.

    ``values`` is a ``memoryview`` of float64 over the mapped file: ``values[i] += x`` is the
    whole cost of an increment. Allocation takes a lock; increments do not (the writers of one
    series are the threads of one process, serialised by the GIL between the index and the store).
    """

    def __init__(self, directory: str | os.PathLike[str], capacity: int = DEFAULT_CAPACITY):
        self.directory = Path(directory)
        self.capacity = capacity
        self._lock = threading.Lock()
        #: Taken by the catalogue metrics' increments (the HTTP path is lock-free, on one loop).
        self.write_lock = threading.Lock()
        self._records: list[str] = []  # the index lines written so far, replayed after fork
        #: Writers that keep in-process state about their slots (native histograms): reset in a
        #: forked child, whose files start from zero.
        self.forked: weakref.WeakSet[Any] = weakref.WeakSet()
        self._next = 0
        self._opened = False
        # A float64 memoryview over the mapped file once open (``Any``: typeshed types a
        # memoryview's items as int).
        self.values: Any = memoryview(b"")
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    def _open(self) -> None:
        self.pid = os.getpid()
        self.token = f"{time.time_ns():020d}"
        stem = f"{PREFIX}{self.pid}_{self.token}"
        self.slots_path = self.directory / f"{stem}{SLOTS_SUFFIX}"
        self.keys_path = self.directory / f"{stem}{KEYS_SUFFIX}"
        fd = os.open(self.slots_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, self.capacity * 8)
            self._map = mmap.mmap(fd, self.capacity * 8, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self.values = memoryview(self._map).cast("d")
        self._keys_fd = os.open(
            self.keys_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644
        )
        if self._records:
            os.write(self._keys_fd, "".join(self._records).encode())

    def allocate(
        self,
        family: str,
        kind: str,
        help_text: str,
        labels: Sequence[tuple[str, str]],
        bounds: Sequence[float] = (),
        count_as: Sequence[str] = (),
        native: NativeConfig | None = None,
    ) -> int:
        """The first slot of a new series; ``StoreFull`` when the file has no room left.

        ``count_as``: ``(counter family, help)`` for a histogram whose count is also exposed as
        that counter (``http_requests_total`` is the duration histogram's count). ``native``: a
        native histogram's configuration (kind :data:`NATIVE`).
        """
        size = slots_for(kind, bounds, native)
        with self._lock:
            if not self._opened:
                # On first use: a registry that never records leaves no files behind.
                self._open()
                self._opened = True
            start = self._next
            if start + size > self.capacity:
                raise StoreFull(ERR_FULL.format(self.capacity))
            names = [k for k, _ in labels]
            values = [v for _, v in labels]
            record: list[Any] = [
                start,
                family,
                kind,
                help_text,
                names,
                values,
                list(bounds),
                list(count_as),
            ]
            if native is not None:
                record.append(list(native))
            line = json.dumps(record) + "\n"
            if self._keys_fd >= 0:  # -1: a forked child that could not open files of its own
                os.write(self._keys_fd, line.encode())
            self._records.append(line)
            self._next = start + size
            return start


def _after_fork(ref: weakref.ref[SharedStore]) -> None:
    store = ref()
    if store is None:
        return
    # The parent's mapping stays the parent's: this process writes to files of its own, at the
    # same offsets, starting from zero.
    store._lock = threading.Lock()
    store.write_lock = threading.Lock()
    for writer in list(store.forked):
        writer.forked()
    if store._opened:
        os.close(store._keys_fd)
        store._keys_fd = -1
        try:
            store._open()
        except OSError:
            # No files of its own (the directory gone, no space, no fds): count in private
            # memory, lost with this process, rather than into the parent's file, where the two
            # processes' unsynchronised increments would corrupt each other's counts.
            store.values = memoryview(bytearray(store.capacity * 8)).cast("d")


class SharedPlainHistogram(PlainHistogram):
    """A :class:`~asgi_perf._histogram.PlainHistogram` whose counts and sum live in shared memory.

    A drop-in for the scrape-time collectors that ``observe()`` and read ``cumulative()``: the
    feature picks this class when it builds the histogram, the observing code stays the same.
    The slots are allocated on the first observation (a histogram never observed is not exported,
    as before). Writers serialise as for the plain class (one lock or one event-loop thread).
    """

    __slots__ = ("_family", "_help", "_labels", "_slot", "_store")

    def __init__(
        self,
        bounds: tuple[float, ...],
        store: SharedStore,
        family: str,
        help_text: str,
        labels: Sequence[tuple[str, str]],
    ) -> None:
        super().__init__(bounds)
        self._store = store
        self._family = family
        self._help = help_text
        self._labels = list(labels)
        self._slot = -1

    def observe(self, value: float) -> None:
        slot = self._slot
        if slot < 0:
            slot = self._slot = self._store.allocate(
                self._family, HISTOGRAM, self._help, self._labels, self.bounds
            )
        values = self._store.values
        values[slot + bisect_left(self.bounds, value)] += 1
        values[slot + len(self.bounds) + 1] += value

    @property
    def count(self) -> int:
        return self.cumulative()[2]

    @property
    def allocated(self) -> bool:
        """Whether the series has its slots (it has been observed)."""
        return self._slot >= 0

    def cumulative(self) -> tuple[list[tuple[str, float]], float, int]:
        if self._slot < 0:
            return super().cumulative()
        samples = list(expand(self._family, HISTOGRAM, self.bounds, self._store.values, self._slot))
        buckets = [(extra["le"], value) for _, extra, value in samples[:-2]]
        return buckets, samples[-1][2], int(samples[-2][2])


class SharedCounterDict(MutableMapping[tuple[str, ...], float]):
    """``{label values: count}`` whose values live in shared memory: a drop-in for the plain
    dicts scrape-time collectors count into (``d[key] = d.get(key, 0) + 1``).

    A new key gets its slot (and its index line) when first set; keys are never removed.
    """

    def __init__(
        self, store: SharedStore, family: str, help_text: str, labelnames: Sequence[str]
    ) -> None:
        self._store = store
        self._family = family
        self._help = help_text
        self._labelnames = tuple(labelnames)
        self._slots: dict[tuple[str, ...], int] = {}

    def __getitem__(self, key: tuple[str, ...]) -> float:
        return float(self._store.values[self._slots[key]])

    def __setitem__(self, key: tuple[str, ...], value: float) -> None:
        slot = self._slots.get(key)
        if slot is None:
            labels = list(zip(self._labelnames, key, strict=True))
            slot = self._store.allocate(self._family, COUNTER, self._help, labels)
            self._slots[key] = slot
        self._store.values[slot] = value

    def __delitem__(self, key: tuple[str, ...]) -> None:
        raise TypeError("counters in shared memory are never removed")

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return iter(list(self._slots))

    def __len__(self) -> int:
        return len(self._slots)


class SharedCounterChild:
    """A counter series in shared memory (the ``labels()`` child of :class:`SharedMetric`)."""

    __slots__ = ("_slot", "_store")

    def __init__(self, store: SharedStore, slot: int) -> None:
        self._store = store
        self._slot = slot

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        with self._store.write_lock:  # like prometheus_client's values: any thread may count
            self._store.values[self._slot] += amount


class SharedHistogramChild:
    """A histogram series in shared memory: non-cumulative bucket counts, then the sum."""

    __slots__ = ("_bounds", "_slot", "_store")

    def __init__(self, store: SharedStore, slot: int, bounds: tuple[float, ...]) -> None:
        self._store = store
        self._slot = slot
        self._bounds = bounds

    def observe(self, amount: float) -> None:
        with self._store.write_lock:
            values = self._store.values
            values[self._slot + bisect_left(self._bounds, amount)] += 1
            values[self._slot + len(self._bounds) + 1] += amount


class SharedMetric:
    """A catalogue counter or histogram whose series live in a :class:`SharedStore`.

    Registered in the worker's own registry as a collector yielding this worker's values; the
    merged view reads every worker's files instead.
    """

    def __init__(
        self,
        store: SharedStore,
        family: str,
        kind: str,
        help_text: str,
        labelnames: Sequence[str],
        bounds: tuple[float, ...] = (),
    ) -> None:
        self.store = store
        self.family = family
        self.kind = kind
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self.bounds = bounds
        self._children: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def labels(self, *values: str) -> Any:
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.get(key)
                if child is None:
                    slot = self.store.allocate(
                        self.family,
                        self.kind,
                        self.help,
                        list(zip(self.labelnames, key, strict=True)),
                        self.bounds,
                    )
                    if self.kind == HISTOGRAM:
                        child = SharedHistogramChild(self.store, slot, self.bounds)
                    else:
                        child = SharedCounterChild(self.store, slot)
                    self._children[key] = child
        return child

    # An unlabelled metric is its own only series.
    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def observe(self, amount: float) -> None:
        self.labels().observe(amount)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.metrics_core import Metric

        metric = Metric(self.family, self.help, self.kind)
        values = self.store.values
        for key, child in list(self._children.items()):
            labels = dict(zip(self.labelnames, key, strict=True))
            for name, extra, value in expand(
                self.family, self.kind, self.bounds, values, child._slot
            ):
                metric.add_sample(name, {**labels, **extra}, value)
        yield metric

    def describe(self) -> Iterator[Any]:
        from prometheus_client.metrics_core import Metric

        yield Metric(self.family, self.help, self.kind)


def expand(
    family: str, kind: str, bounds: Sequence[float], values: Any, slot: int
) -> Iterator[tuple[str, dict[str, str], float]]:
    """The exposition samples ``(name, extra labels, value)`` of the series at ``slot``."""
    if kind == COUNTER:
        yield f"{family}_total", {}, float(values[slot])
    elif kind in (HISTOGRAM, NATIVE):  # a native one: its classic part
        running = 0.0
        les = bucket_labels(tuple(bounds))
        for i, le in enumerate(les):
            running += values[slot + i]
            yield f"{family}_bucket", {"le": le}, running
        running += values[slot + len(bounds)]
        yield f"{family}_bucket", {"le": "+Inf"}, running
        yield f"{family}_count", {}, running
        yield f"{family}_sum", {}, float(values[slot + len(bounds) + 1])
    else:
        yield f"{family}_count", {}, float(values[slot])
        yield f"{family}_sum", {}, float(values[slot + 1])


@dataclass
class Series:
    """One series read back from a worker's files."""

    family: str
    kind: str
    help: str
    labels: tuple[tuple[str, str], ...]
    bounds: tuple[float, ...]
    values: list[float]
    count_as: tuple[str, ...] = ()
    #: A native histogram's native part (``values`` then hold its classic part).
    native: NativeSnapshot | None = None


def worker_files(directory: Path) -> list[Path]:
    """Every worker's index file in ``directory`` (dead workers' included)."""
    return sorted(directory.glob(f"{PREFIX}*_*{KEYS_SUFFIX}"))


def slots_path(keys_path: Path) -> Path:
    """The slot file that goes with an index file."""
    return keys_path.with_name(keys_path.name[: -len(KEYS_SUFFIX)] + SLOTS_SUFFIX)


def writer_pid(keys_path: Path) -> int | None:
    """The pid in an index file's name (``None`` if the name is not one of ours)."""
    pid = keys_path.name[len(PREFIX) :].partition("_")[0]
    return int(pid) if pid.isdigit() else None


@dataclass
class IndexEntry:
    """One line of a worker's index: a series' first slot and what it is."""

    start: int
    family: str
    kind: str
    help: str
    labels: tuple[tuple[str, str], ...]
    bounds: tuple[float, ...]
    count_as: tuple[str, ...] = ()
    native: NativeConfig | None = None

    @property
    def size(self) -> int:
        return slots_for(self.kind, self.bounds, self.native)

    def layout(self) -> NativeLayout | None:
        """A native histogram's layout (``None`` for any other kind)."""
        if self.kind != NATIVE or self.native is None:
            return None
        return NativeLayout.of(len(self.bounds), self.native)


def parse_index(complete: bytes) -> list[IndexEntry]:
    """The entries of complete index lines; ``ValueError``/``TypeError`` for a line that is not
    one (the file is then not one of asgi-perf's, or corrupt)."""
    out = []
    for line in complete.splitlines():
        start, family, kind, help_text, names, labelvalues, bounds, count_as, *rest = json.loads(
            line
        )
        native: NativeConfig | None = None
        if kind == NATIVE:
            schema, threshold, max_buckets = rest[0]
            if type(schema) is not int or type(max_buckets) is not int or max_buckets < 1:
                raise ValueError(f"bad native configuration {rest[0]!r}")
            native = (schema, float(threshold), max_buckets)
        out.append(
            IndexEntry(
                int(start),
                str(family),
                str(kind),
                str(help_text),
                tuple(zip(map(str, names), map(str, labelvalues), strict=True)),
                tuple(float(b) for b in bounds),
                tuple(map(str, count_as)),
                native,
            )
        )
    return out


def complete_lines(raw: bytes) -> bytes:
    """The complete lines of an index read (a writer may be half-way through the last one)."""
    return raw[: raw.rfind(b"\n") + 1]


def map_slots(keys_path: Path) -> mmap.mmap | None:
    """A read-only mapping of the slot file of ``keys_path`` (``None`` if absent or empty)."""
    try:
        fd = os.open(slots_path(keys_path), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size < 8:
            return None
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)


def read_worker(keys_path: Path) -> Iterator[Series]:
    """The series of one worker, with their values as they are now.

    Only complete index lines count (a writer may be half-way through one); a series' slots are
    zero until its line exists, so nothing counted is missed.
    """
    try:
        raw = keys_path.read_bytes()
    except FileNotFoundError:
        return
    mapped = map_slots(keys_path)
    if mapped is None:
        return
    view = memoryview(mapped).cast("d")
    try:
        for e in parse_index(complete_lines(raw)):
            if e.start + e.size > len(view):
                raise IndexError(f"slot {e.start + e.size} is past the end of the file")
            layout = e.layout()
            snapshot = None
            if layout is None:
                values = list(view[e.start : e.start + e.size])
            else:
                values, snapshot, _ = read_run(view, e.start, layout)
            yield Series(e.family, e.kind, e.help, e.labels, e.bounds, values, e.count_as, snapshot)
    finally:
        view.release()
        mapped.close()


__all__ = [
    "COUNTER",
    "DEFAULT_CAPACITY",
    "HISTOGRAM",
    "NATIVE",
    "NATIVE_CAPACITY",
    "SUMMARY",
    "IndexEntry",
    "Series",
    "SharedCounterChild",
    "SharedCounterDict",
    "SharedHistogramChild",
    "SharedMetric",
    "SharedPlainHistogram",
    "SharedStore",
    "StoreFull",
    "complete_lines",
    "expand",
    "family_type",
    "map_slots",
    "parse_index",
    "read_worker",
    "slots_for",
    "slots_path",
    "worker_files",
    "writer_pid",
]

"""Multi-worker mode: every asgi-perf metric summed across uvicorn / gunicorn worker processes.

Two stores, as in prometheus_client's multiprocess mode. Counters and histograms live in each
worker's shared-memory file (:mod:`asgi_perf._shared`): the registry and its components choose
that store when they are built, and a scrape reads every worker's slots as they are at that
instant, so the totals are exact and a SIGKILLed worker loses nothing. prometheus_client's own
mode refuses custom collectors, and many asgi-perf numbers are read from their owners at scrape
time (pools, caches, connections, system figures): those are *published*: each worker writes the
rest of what its registry exposes into a snapshot file in ``PROMETHEUS_MULTIPROC_DIR`` every
``interval`` seconds (and at exit, and whenever it serves a scrape). The metrics endpoint of any
worker merges the files of every worker (see :mod:`asgi_perf.export._mp_store` for the rules and
the locking).

The request path pays one store into a mapped page per counter increment; the publish costs one
collect + JSON write per worker per interval. Published values are up to ``interval`` old, and a
worker killed with SIGKILL loses what its scrape-time collectors counted since its last publish
(a graceful exit publishes first).

Usage: nothing, when the app serves :func:`~asgi_perf.metrics_app` and the variable is set: the
metrics app enables it. With gunicorn, add ``from asgi_perf.export import child_exit`` to
``gunicorn.conf.py`` so a dead worker is compacted at once.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from .._checks import ERR_REGISTRY, check, is_positive
from .._rows import RowsRequest, reading_rows
from .._shared import SharedStore, worker_files, writer_pid
from ..catalogue import CATALOGUE
from ..registry import MULTIPROC_ENV, ComponentKey, PerfRegistry
from . import _mp_store as store

#: Overrides the publish interval (seconds) of an automatically enabled registry.
INTERVAL_ENV = "ASGI_PERF_MULTIPROC_INTERVAL"
DEFAULT_INTERVAL = 1.0
#: The ``component`` label of this mode's instrumentation errors.
COMPONENT = "multiprocess"

ERR_DIR_MISSING = (
    "PROMETHEUS_MULTIPROC_DIR={!r} does not exist: create it (empty) before starting the workers"
)
ERR_DIR_NOT_DIR = "PROMETHEUS_MULTIPROC_DIR={!r} is not a directory"
ERR_DIR_NOT_WRITABLE = "PROMETHEUS_MULTIPROC_DIR={!r} is not writable by this process"
ERR_NO_DIR = "multi-worker mode needs a directory: set PROMETHEUS_MULTIPROC_DIR or pass directory="
ERR_INTERVAL = "interval must be a number of seconds > 0, got {!r}"
ERR_GAUGE_MODE = "gauge mode for {!r} must be one of {}, got {!r}"
#: Logged once per bad file (counted on every scrape that leaves it out).
ERR_SKIPPED = (
    "asgi-perf multi-worker snapshot %s is left out of every scrape until it is removed or "
    "repaired: %s"
)
#: Counted when native histogram series stayed mid-rewrite through every read retry.
ERR_TORN = "{} native histogram series read while their writer was rewriting them"
_MAX_LOGGED = 1000

logger = logging.getLogger("asgi_perf")

#: Gauges that must not be summed across workers (catalogue names; the namespace is applied).
DEFAULT_GAUGE_MODES: Mapping[str, str] = {
    # Host-wide readings: every worker sees the same host, so the sum would be nonsense.
    "system_cpu_ratio": "livemax",
    "system_memory_ratio": "livemax",
    "system_disk_ratio": "livemax",
    # An in-process alert fires in one worker or several: the fleet view is "firing anywhere".
    "asgi_perf_alerts_firing": "livemax",
}


def check_directory(directory: str | os.PathLike[str]) -> Path:
    """The directory as a ``Path``; ``ValueError`` if missing, not a directory or read-only."""
    path = Path(directory)
    if not path.exists():
        raise ValueError(ERR_DIR_MISSING.format(str(directory)))
    if not path.is_dir():
        raise ValueError(ERR_DIR_NOT_DIR.format(str(directory)))
    try:
        # Probe by creating the lock file the workers need anyway: os.access() says yes to root
        # on a read-only mount.
        with open(path / store.LOCK, "ab"):
            pass
    except OSError:
        raise ValueError(ERR_DIR_NOT_WRITABLE.format(str(directory))) from None
    return path


def _check_interval(interval: object) -> float:
    check(is_positive(interval), ERR_INTERVAL, interval)
    return float(cast("float", interval))


class Multiprocess:
    """The multi-worker state of one registry: its publisher thread and the merged view.

    Build it with :func:`enable_multiprocess`. ``view`` is a ``CollectorRegistry`` whose one
    collector merges every worker's snapshot; :func:`~asgi_perf.metrics_app` serves it.
    """

    def __init__(
        self,
        registry: PerfRegistry,
        directory: Path,
        interval: float,
        gauge_modes: Mapping[str, str],
    ) -> None:
        self.registry = registry
        self.directory = directory
        self.interval = interval
        self.gauge_modes = dict(gauge_modes)
        if registry.shared is None:
            # Enabled explicitly (no PROMETHEUS_MULTIPROC_DIR at the registry's construction):
            # components built from now on keep their counters in shared memory; those built
            # before stay in process memory and are published with the snapshot.
            registry.shared = SharedStore(directory, registry.shared_capacity())
        self._reader = store.SharedReader()
        self._snapshots = store.SnapshotCache()
        self._skip: frozenset[str] = frozenset()
        self._skip_for = -1
        self.view = CollectorRegistry(auto_describe=False)
        self.view.register(_MergedCollector(self))
        self._last: bytes = b""
        self._closed = False
        self._logged: set[tuple[str, tuple[int, int] | None]] = set()
        self._reset()
        ref = weakref.ref(self)
        # gunicorn --preload imports the app in the master and forks: the child must publish
        # under its own pid and needs its own thread (threads do not survive fork).
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))
        atexit.register(self.close)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.pid = os.getpid()
        # Zero-padded start time: a pid reused later gets a token that sorts after this one.
        self.token = f"{time.time_ns():020d}"
        self.path = self.directory / store.snapshot_name(self.pid, self.token)
        self._last = b""
        self._thread = threading.Thread(
            target=self._run, name="asgi-perf-multiprocess", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.publish()

    def publish(self) -> bool:
        """Write this worker's snapshot now; ``False`` (counted, logged) if that failed."""
        try:
            with self._lock:
                # Counters and histograms in shared memory are read from there by every scrape:
                # the snapshot carries the rest (gauges and scrape-time values).
                shared = self.registry.shared_families
                # Collectors with rows do not even build the families read from shared memory.
                with reading_rows(RowsRequest(skip=self._skipped_names(shared))):
                    collected = list(self.registry.prometheus.collect())
                published = (m for m in collected if m.name not in shared)
                data = store.encode(self.pid, self.token, published)
                # An idle worker rewrites nothing.
                if data != self._last:
                    store.write_atomic(self.path, data)
                    self._last = data
        except Exception as exc:  # noqa: BLE001 - a failed publish is retried next interval
            self.registry.report_error(COMPONENT, exc)
            return False
        return True

    def _skipped_names(self, shared: set[str]) -> frozenset[str]:
        """The catalogue names whose exposed families are in ``shared``."""
        key = len(shared)
        if key != self._skip_for:
            name = self.registry.metric_name
            self._skip = frozenset(
                n
                for n, spec in CATALOGUE.items()
                if (name(n).removesuffix("_total") if spec.kind == "counter" else name(n)) in shared
            )
            self._skip_for = key
        return self._skip

    def close(self) -> None:
        """Stop the publisher thread after one final publish (runs at interpreter exit too)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        atexit.unregister(self.close)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)  # an ongoing publish finishes; the loop then ends
        if os.getpid() == self.pid:
            self.publish()

    def collect(self, *, compact: bool = True) -> Iterator[Metric]:
        """Every worker's families merged; dead workers compacted first (``compact=True``).

        A snapshot that cannot be read or is corrupt is left out (see :meth:`skipped`).
        """
        try:
            self.publish()
            files = store.snapshot_files(self.directory)
            dead = store.dead_files(self.directory, files, self.pid)
            dead_shared = store.dead_shared_files(self.directory, self.pid)
            if (dead or dead_shared) and compact:
                with store.locked(self.directory, exclusive=True):
                    try:
                        store.compact(
                            self.directory,
                            store.dead_files(self.directory, files, self.pid),
                            store.dead_shared_files(self.directory, self.pid),
                        )
                    except store.CorruptSnapshot as exc:
                        # The dead workers' own files stay and are merged as they are.
                        self.skipped(self.directory / store.COMPACTED, exc)
            with store.locked(self.directory, exclusive=False):
                families, natives = self._merge()
        except Exception as exc:
            # The scrape fails (Prometheus shows up == 0): serving one worker's numbers as the
            # total would make every counter jump backwards.
            self.registry.report_error(COMPONENT, exc)
            raise
        # Exemplars are this worker's own: each scrape shows those of the worker that served it.
        return self.registry.worker_exemplars.attach(store.to_metrics(families, natives))

    def skipped(self, path: Path, exc: BaseException) -> None:
        """A snapshot left out of a scrape: counted every time, logged once per file.

        Writes are atomic renames, so such a file was not written by asgi-perf, or the disk
        failed; it stays left out (and is never compacted) until someone removes or repairs it.
        """
        self.registry.report_error(COMPONENT, exc, log=False)
        key = (path.name, _identity(path))
        if key in self._logged:
            return
        if len(self._logged) >= _MAX_LOGGED:
            self._logged.clear()
        self._logged.add(key)
        logger.warning(ERR_SKIPPED, path, exc)

    def _merge(self) -> tuple[store.Families, store.Natives]:
        modes = {self.registry.metric_name(k): v for k, v in DEFAULT_GAUGE_MODES.items()}
        modes.update(self.gauge_modes)
        load = self._snapshots.load
        try:
            compacted = load(self.directory / store.COMPACTED)
        except store.CorruptSnapshot as exc:
            self.skipped(self.directory / store.COMPACTED, exc)
            compacted = None
        skip = store.folded_names(compacted)
        files = [p for p in store.snapshot_files(self.directory) if p.name not in skip]
        dead = set(store.dead_files(self.directory, files, self.pid))
        families: store.Families = {}
        natives: store.Natives = {}
        # This worker first, so the families keep its (the registry's) order.
        files.sort(key=lambda p: p != self.path)
        for path in files:
            try:
                # A dead worker's file is read until it is compacted: not worth keeping.
                snap = load(path, path not in dead)
            except store.CorruptSnapshot as exc:
                self.skipped(path, exc)
                continue
            if snap is not None:
                store.merge_into(families, snap, path not in dead, modes, natives)
        if compacted is not None:
            store.merge_into(families, compacted, live=False, gauge_modes=modes, natives=natives)
        self._snapshots.retain({self.directory / store.COMPACTED, *(set(files) - dead)})
        torn = self._reader.torn
        failed = store.merge_shared(families, self.directory, skip, self._reader, natives)
        for path, error in failed:
            self.registry.report_error(COMPONENT, OSError(f"{path.name}: {error}"))
        if self._reader.torn > torn:
            # A native series still mid-rewrite after every retry: taken as read (see read_parts).
            self.registry.report_error(
                COMPONENT, RuntimeError(ERR_TORN.format(self._reader.torn - torn)), log=False
            )
        return families, natives


#: The worker's multi-worker state: what its scrapes and pushes serve instead of its own registry.
MULTIPROCESS: ComponentKey[Multiprocess] = ComponentKey("multiprocess")


class _MergedCollector:
    def __init__(self, owner: Multiprocess) -> None:
        self._owner = weakref.ref(owner)

    def collect(self) -> Iterator[Metric]:
        owner = self._owner()
        return owner.collect() if owner is not None else iter(())


def _identity(path: Path) -> tuple[int, int] | None:
    # A file replaced by another bad one is logged again; the same bad file is not.
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _after_fork(ref: weakref.ref[Multiprocess]) -> None:
    mp = ref()
    if mp is not None and not mp._closed:
        mp._reset()


def enable_multiprocess(
    registry: PerfRegistry,
    directory: str | os.PathLike[str] | None = None,
    *,
    interval: float | None = None,
    gauge_modes: Mapping[str, str] | None = None,
) -> Multiprocess:
    """Publish ``registry`` for the other workers and serve the merged view from it.

    :param directory: shared by every worker of the app on this host; default
        ``$PROMETHEUS_MULTIPROC_DIR``. It must exist; empty it before the app starts.
    :param interval: seconds between publishes (default 1).
    :param gauge_modes: exposed gauge name -> ``livesum`` (default), ``livemax``, ``livemin`` or
        ``liveall`` (one series per worker, with a ``pid`` label).
    :returns: the registry's one :class:`Multiprocess` (a second call returns the same one, with
        the new interval if given).
    """
    check(isinstance(registry, PerfRegistry), ERR_REGISTRY, registry)
    if directory is None:
        directory = os.environ.get(MULTIPROC_ENV) or None
        if directory is None:
            raise ValueError(ERR_NO_DIR)
    path = check_directory(directory)
    every = _check_interval(DEFAULT_INTERVAL if interval is None else interval)
    modes = dict(gauge_modes or {})
    for name, mode in modes.items():
        if mode not in store.GAUGE_MODES:
            raise ValueError(ERR_GAUGE_MODE.format(name, sorted(store.GAUGE_MODES), mode))
    mp = registry.component(MULTIPROCESS, lambda: Multiprocess(registry, path, every, modes))
    mp.interval = every
    mp.gauge_modes.update(modes)
    return mp


def enable_from_environment(registry: PerfRegistry) -> Multiprocess | None:
    """:func:`enable_multiprocess` when ``PROMETHEUS_MULTIPROC_DIR`` is set, else nothing.

    The interval comes from ``ASGI_PERF_MULTIPROC_INTERVAL`` (seconds) when that is set.
    """
    if not os.environ.get(MULTIPROC_ENV):
        return None
    raw = os.environ.get(INTERVAL_ENV)
    try:
        interval = float(raw) if raw else None
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV}: " + ERR_INTERVAL.format(raw)) from None
    return enable_multiprocess(registry, interval=interval)


def mark_process_dead(pid: int, directory: str | os.PathLike[str] | None = None) -> int:
    """Compact a dead worker's files now (and prometheus_client's live gauges for ``pid``).

    Safe to call from any process sharing the directory (the gunicorn master). Returns how many
    asgi-perf files (snapshots and shared-memory indexes) were folded.
    """
    from prometheus_client import multiprocess as prom_mp

    directory = directory or os.environ.get(MULTIPROC_ENV)
    if not directory:
        raise ValueError(ERR_NO_DIR)
    path = check_directory(directory)
    prom_mp.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    files = [
        p
        for p in store.snapshot_files(path)
        if (ids := store.parse_name(p)) is not None and ids[0] == pid
    ]
    series = [p for p in worker_files(path) if writer_pid(p) == pid]
    if not files and not series:
        return 0
    with store.locked(path, exclusive=True):
        return store.compact(path, files, series)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: ``from asgi_perf.export import child_exit`` in gunicorn.conf.py."""
    mark_process_dead(worker.pid)


__all__ = [
    "DEFAULT_GAUGE_MODES",
    "DEFAULT_INTERVAL",
    "ERR_DIR_MISSING",
    "ERR_DIR_NOT_DIR",
    "ERR_DIR_NOT_WRITABLE",
    "ERR_GAUGE_MODE",
    "ERR_INTERVAL",
    "ERR_NO_DIR",
    "INTERVAL_ENV",
    "MULTIPROC_ENV",
    "Multiprocess",
    "check_directory",
    "child_exit",
    "enable_from_environment",
    "enable_multiprocess",
    "mark_process_dead",
]

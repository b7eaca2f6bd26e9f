"""Process and host figures: psutil when installed, ``/proc`` otherwise, stdlib where it suffices.

CPU utilisation is a rate, so each reader keeps its own previous reading (a monitor sampling every
5 s and a Prometheus server scraping every 15 s must not shorten each other's window, which is
what ``psutil.cpu_percent()``'s module-global state would do). Values that cannot be read on this
platform are ``None``, never a made-up zero.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from prometheus_client.metrics_core import Metric

from ..registry import CatalogueCollector, PerfRegistry
from ._schema import SystemFigures

PROC = "/proc"

ERR_NO_PSUTIL = 'use_psutil=True but psutil is not installed: pip install "asgi-perf[psutil]"'


# Set while a reader that keeps its own sampler (the summary) collects the registry.
_skipping: ContextVar[bool] = ContextVar("asgi_perf_skip_system_collector", default=False)


@contextmanager
def system_collector_skipped() -> Iterator[None]:
    """Within the block, :meth:`SystemCollector.collect` yields nothing and reads nothing.

    Collecting the registry for anything but a scrape would otherwise consume the collector's CPU
    window, so the next scrape would report the CPU since that read instead of since the last
    scrape.
    """
    token = _skipping.set(True)
    try:
        yield
    finally:
        _skipping.reset(token)


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read()
    except OSError:
        return None


class SystemSampler:
    """Reads CPU, memory, disk and process figures; ``read()`` returns percentages and bytes.

    :param disk_path: a path on the filesystem whose usage is reported.
    :param use_psutil: force (``True``) or forbid (``False``) psutil; default: use it if installed.
    :param proc: the procfs mount (tests point it at a fixture tree).
    """

    def __init__(
        self,
        *,
        disk_path: str = "/",
        use_psutil: bool | None = None,
        proc: str = PROC,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.disk_path = disk_path
        self._psutil = _psutil() if use_psutil in (None, True) else None
        if use_psutil and self._psutil is None:
            raise ValueError(ERR_NO_PSUTIL)
        self.source = "psutil" if self._psutil is not None else "proc"
        self._proc = proc
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._last_host: tuple[float, float] | None = self._host_cpu_times()
        self._last_process = (clock(), cpu_clock())

    # -- host CPU --------------------------------------------------------------------------------
    def _host_cpu_times(self) -> tuple[float, float] | None:
        """(busy, total) CPU time since boot, or ``None`` where unavailable."""
        if self._psutil is not None:
            t = self._psutil.cpu_times()
            total = float(sum(t))
            # iowait is idle time waiting on disk: not busy, as in top(1).
            idle = float(t.idle) + float(getattr(t, "iowait", 0.0))
            return total - idle, total
        text = _read(f"{self._proc}/stat")
        if not text or not text.startswith("cpu "):
            return None
        fields = [float(v) for v in text.split("\n", 1)[0].split()[1:]]
        # user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
        # already counted in user/nice, so only the first eight fields make the total.
        total = sum(fields[:8])
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        return total - idle, total

    def host_cpu_percent(self) -> float | None:
        now = self._host_cpu_times()
        last, self._last_host = self._last_host, now
        if now is None or last is None or now[1] <= last[1]:
            return None
        return round(100.0 * (now[0] - last[0]) / (now[1] - last[1]), 2)

    def process_cpu_percent(self) -> float | None:
        wall, cpu = self._clock(), self._cpu_clock()
        last_wall, last_cpu = self._last_process
        self._last_process = (wall, cpu)
        if wall <= last_wall:
            return None
        return round(100.0 * (cpu - last_cpu) / (wall - last_wall), 2)

    # -- memory, disk, fds -----------------------------------------------------------------------
    def memory_percent(self) -> float | None:
        if self._psutil is not None:
            return float(self._psutil.virtual_memory().percent)
        text = _read(f"{self._proc}/meminfo")
        if not text:
            return None
        info = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                info[key] = float(parts[0])
        total, available = info.get("MemTotal"), info.get("MemAvailable")
        if not total or available is None:
            return None
        return round(100.0 * (1.0 - available / total), 2)

    def disk_percent(self) -> float | None:
        try:
            usage = shutil.disk_usage(self.disk_path)
        except OSError:
            return None
        return round(100.0 * usage.used / usage.total, 2) if usage.total else None

    def rss_bytes(self) -> int | None:
        if self._psutil is not None:
            return int(self._psutil.Process().memory_info().rss)
        text = _read(f"{self._proc}/self/statm")
        if not text:
            return None
        return int(text.split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def open_fds(self) -> int | None:
        if self._psutil is not None:
            process = self._psutil.Process()
            return int(process.num_fds()) if hasattr(process, "num_fds") else None
        try:
            return len(os.listdir(f"{self._proc}/self/fd"))
        except OSError:
            return None

    def read(self) -> SystemFigures:
        """Every figure, as a JSON-able dict (percentages 0-100)."""
        return {
            "source": self.source,
            "cpu_percent": self.host_cpu_percent(),
            "memory_percent": self.memory_percent(),
            "disk_percent": self.disk_percent(),
            "disk_path": self.disk_path,
            "process_cpu_percent": self.process_cpu_percent(),
            "rss_bytes": self.rss_bytes(),
            "open_fds": self.open_fds(),
            "cpu_count": os.cpu_count(),
        }


class SystemCollector(CatalogueCollector):
    """Exports a :class:`SystemSampler`'s figures as ``system_*`` gauges (ratios 0-1) when scraped.

    It owns its sampler, so its CPU window is the time between two scrapes; collections inside
    :func:`system_collector_skipped` (the summary's) do not count as scrapes.
    """

    metrics = (
        "system_cpu_ratio",
        "system_memory_ratio",
        "system_process_cpu_ratio",
        "system_disk_ratio",
        "system_process_resident_bytes",
        "system_process_open_fds",
    )

    def __init__(self, registry: PerfRegistry, sampler: SystemSampler | None = None) -> None:
        super().__init__(registry)
        self.sampler = sampler or SystemSampler()

    def collect(self) -> Iterator[Metric]:
        if _skipping.get():
            return
        try:
            figures = self.sampler.read()
        except Exception as exc:  # noqa: BLE001 - a failing read must not fail the whole scrape
            self.registry.report_error("system", exc)
            return
        f = self.families()
        for name, value in (
            ("system_cpu_ratio", figures["cpu_percent"]),
            ("system_memory_ratio", figures["memory_percent"]),
            ("system_process_cpu_ratio", figures["process_cpu_percent"]),
        ):
            if value is not None:
                f[name].add_metric([], value / 100.0)
        if figures["disk_percent"] is not None:
            f["system_disk_ratio"].add_metric(
                [figures["disk_path"]], figures["disk_percent"] / 100.0
            )
        for name, count in (
            ("system_process_resident_bytes", figures["rss_bytes"]),
            ("system_process_open_fds", figures["open_fds"]),
        ):
            if count is not None:
                f[name].add_metric([], count)
        yield from f.values()


__all__ = ["ERR_NO_PSUTIL", "SystemCollector", "SystemSampler", "system_collector_skipped"]

"""``registry.summary()``: every component's key figures in one JSON-able dict.

The summary is built from the registry's own samples, looked up by catalogue name, so it shows
whatever subset of the integrations is installed without importing any of them. Rates, error rates
and percentiles are computed over a *window*: by default since the previous monitor snapshot when a
:class:`~asgi_perf.operations.Monitor` runs, since the registry was created otherwise; or, asked
with ``window=N``, over the last N seconds or a little more (from the newest kept baseline at least
N seconds old; see :class:`Summarizer`). The summary's ``window`` says which time it covers.
Percentiles are estimated from histogram bucket deltas with PromQL's interpolation
(``_histogram.quantile``).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from ..registry import PerfRegistry
from . import _sections as sections
from ._keys import SUMMARIZER
from ._samples import Reading, Samples, Window
from ._schema import (
    InstrumentationSection,
    Summary,
    SystemFigures,
)
from ._system import SystemSampler

#: A window needs this many requests before its error rate or hit ratio feeds an alert.
MIN_WINDOW_COUNT = 10
#: The longest ``window=`` a summary can be read over (seconds).
MAX_WINDOW = 300.0
#: Baselines are kept at least this many seconds apart, and at least 1/BASELINE_SHARE of the
#: longest window asked for: a window of N seconds covers N to N + N/15 (or + 2 s), and at most
#: ~17 baselines are kept whatever the window, so their memory stays bounded.
BASELINE_SPACING = 2.0
BASELINE_SHARE = 15
#: Baselines are kept for windows this long before any is asked for (the dashboard's default).
KEPT_WINDOW = 30.0

ERR_WINDOW = "window must be a number of seconds > 0, got {!r}"


class Summarizer:
    """Builds summaries for one registry and keeps the window baseline between them.

    One per registry (``Summarizer.of(registry)``). ``build(advance=True)`` (what the monitor calls)
    also starts a new window; ``build()`` reads without moving it, so a dashboard polling the
    summary never shortens the monitor's window. ``build(window=N)`` reads over the last N
    seconds instead, from the baselines builds leave: as many as the longest window asked for in
    the last MAX_WINDOW seconds needs (:data:`KEPT_WINDOW` until one is), spaced so that at most
    ~17 are kept (see :data:`BASELINE_SPACING`). A longer window than was kept reads from the
    oldest baseline, and says so in its ``window``. The CPU
    figures are rates too, so the two kinds of build read separate samplers: ``sampler`` for
    advancing builds, a copy of it for the others.
    """

    def __init__(
        self,
        registry: PerfRegistry,
        *,
        clock: Callable[[], float] = time.time,
        sampler: SystemSampler | None = None,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.sampler = sampler or SystemSampler()
        # A copy keeps the sampler's settings but holds its own previous CPU reading.
        self._read_sampler = copy.copy(self.sampler)
        self._window = Window(registry.started_at)
        # Oldest first; the first is the registry's start until the kept window has passed.
        self._baselines: deque[Window] = deque([self._window])
        # The longest window asked for lately (seconds) and when it was last asked.
        self._kept = (KEPT_WINDOW, registry.started_at)
        self._lock = threading.Lock()

    @classmethod
    def of(cls, registry: PerfRegistry) -> Summarizer:
        return registry.component(SUMMARIZER, lambda: cls(registry))

    def build(self, *, advance: bool = False, window: float | None = None) -> Summary:
        """The summary now, over the current window or (``window=N``) the last N seconds.

        :raises ValueError: if ``window`` is not a number > 0 (it is capped at MAX_WINDOW).
        """
        if window is not None and not (
            isinstance(window, (int, float)) and math.isfinite(window) and window > 0
        ):
            raise ValueError(ERR_WINDOW.format(window))
        with self._lock:
            now = self.clock()
            if window is None:
                base = self._window
            else:
                window = min(float(window), MAX_WINDOW)
                self._asked(window, now)
                base = self._baseline(now - window)
            fresh = Window(now)
            reading = Reading(self.registry, Samples(self.registry), base, fresh, now)
            summary = _build(reading, (self.sampler if advance else self._read_sampler).read)
            if advance:
                self._window = fresh
            self._keep(fresh)
            return summary

    def _baseline(self, at: float) -> Window:
        """The newest baseline taken at or before ``at`` (the oldest kept if none is)."""
        found = self._baselines[0]
        for baseline in self._baselines:
            if baseline.at > at:
                break
            found = baseline
        return found

    def _asked(self, window: float, now: float) -> None:
        longest, at = self._kept
        # A longer window takes over; the longest one lapses once nobody asked for it for a while.
        if window >= longest or now - at > MAX_WINDOW:
            self._kept = (window, now)

    def _keep(self, fresh: Window) -> None:
        baselines = self._baselines
        longest = self._kept[0]
        if fresh.at - baselines[-1].at < max(BASELINE_SPACING, longest / BASELINE_SHARE):
            return
        baselines.append(fresh)
        # Keep one baseline at least `longest` old, so that window is always covered.
        while len(baselines) > 1 and baselines[1].at <= fresh.at - longest:
            baselines.popleft()


def _build(r: Reading, read_system: Callable[[], SystemFigures]) -> Summary:
    """Every section, one builder per feature; the system figures are read last."""
    reg = r.registry
    http, db, cache = sections.http(r), sections.db(r), sections.cache(r)
    socketio, timers, alerts = sections.socketio(r), sections.timers(r), sections.alerts(r)
    instrumentation: InstrumentationSection = {
        "errors": r.s.total_by("asgi_perf_instrumentation_errors_total", "component"),
        "series_overflow": r.s.total_by("asgi_perf_series_overflow_total", "metric"),
    }
    return {
        "generated_at": round(r.now, 3),
        "started_at": round(reg.started_at, 3),
        "uptime_seconds": round(r.now - reg.started_at, 3),
        "namespace": reg.namespace,
        "window": {
            "start": round(r.base.at, 3),
            "end": round(r.now, 3),
            "seconds": round(r.seconds, 3),
        },
        "http": http,
        "db": db,
        "cache": cache,
        "socketio": socketio,
        "timers": timers,
        "alerts": alerts,
        "instrumentation": instrumentation,
        "system": read_system(),
    }


def build_summary(registry: PerfRegistry, window: float | None = None) -> Summary:
    """The registry's summary now (the window is not advanced; see :class:`Summarizer`)."""
    return Summarizer.of(registry).build(window=window)


def _worst(
    values: Iterable[float | None], pick: Callable[[Iterable[float]], float]
) -> float | None:
    present = [v for v in values if v is not None]
    return pick(present) if present else None


def alert_figures(summary: Summary) -> dict[str, float | None]:
    """The flat figures alert rules compare against thresholds (worst value across series).

    Ratios (error rate, hit ratio) only count windows with at least :data:`MIN_WINDOW_COUNT`
    requests, so one failed request out of two does not page anyone.
    """
    http = summary["http"]
    system = summary["system"]
    sio = summary["socketio"]
    engines = summary["db"]["engines"]
    caches = summary["cache"]["caches"]
    busy_routes = [r for r in http["routes"] if r["window_requests"] >= MIN_WINDOW_COUNT]
    return {
        "system.cpu_percent": system["cpu_percent"],
        "system.memory_percent": system["memory_percent"],
        "system.disk_percent": system["disk_percent"],
        "system.process_cpu_percent": system["process_cpu_percent"],
        "http.error_rate": http["error_rate"]
        if http["window_requests"] >= MIN_WINDOW_COUNT
        else None,
        "http.p95_seconds": _worst((r["p95"] for r in busy_routes), max),
        "http.in_progress": float(http["in_progress"]),
        "db.p95_seconds": _worst((e["p95"] for e in engines), max),
        "db.slow_per_minute": float(sum(e["slow_per_minute"] for e in engines)),
        "db.pool_checkout_timeouts": float(
            sum(e["pool"].get("checkout_timeouts", 0) for e in engines)
        ),
        "cache.hit_ratio": _worst(
            (c["window_hit_ratio"] for c in caches if c["window_requests"] >= MIN_WINDOW_COUNT),
            min,
        ),
        "socketio.queue_depth": _as_float(sio["queue_depth_max"]),
        "socketio.batch_pending": _as_float(sio["batch_pending"]),
        "socketio.batch_wait_p95_seconds": sio["batch_wait_p95"],
        "instrumentation.errors": float(sum(summary["instrumentation"]["errors"].values())),
    }


def _as_float(value: int | None) -> float | None:
    return float(value) if value is not None else None


__all__ = [
    "BASELINE_SHARE",
    "BASELINE_SPACING",
    "ERR_WINDOW",
    "KEPT_WINDOW",
    "MAX_WINDOW",
    "MIN_WINDOW_COUNT",
    "Summarizer",
    "alert_figures",
    "build_summary",
]

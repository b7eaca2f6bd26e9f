"""The monitor: a background sampler that keeps a history of snapshots and drives the alerts.

Every ``interval`` seconds it builds the summary (in a worker thread: collecting a large registry
takes milliseconds the event loop should spend on requests), stores a compact snapshot in a ring
buffer and evaluates the alert rules on the event-loop thread. The summary's window is the time
between two samples, so a snapshot's rates are "per second over the last interval".
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._checks import check, is_int_at_least, is_positive
from ..registry import PerfRegistry
from ._keys import ALERTS, MONITOR
from ._schema import Summary
from ._summary import Summarizer, alert_figures

if TYPE_CHECKING:
    from ._alerts import AlertManager

DEFAULT_INTERVAL = 5.0
DEFAULT_HISTORY = 1000
#: How many routes (busiest first) a snapshot keeps, so history stays small with many routes.
SNAPSHOT_ROUTES = 10

ERR_INTERVAL = "interval must be a number > 0 (seconds), got {!r}"
ERR_HISTORY = "history_size must be an int >= 1, got {!r}"
ERR_ALREADY = (
    "this registry already has a Monitor; use registry.find_component(asgi_perf.operations.MONITOR)"
)


def snapshot(summary: Summary) -> dict[str, Any]:
    """The compact history entry for one summary."""
    http = summary["http"]
    system = summary["system"]
    sio = summary["socketio"]
    engines = summary["db"]["engines"]
    busiest = sorted(http["routes"], key=lambda r: -r["window_requests"])[:SNAPSHOT_ROUTES]
    p95s = [e["p95"] for e in engines if e["p95"] is not None]
    return {
        "time": summary["generated_at"],
        "window_seconds": summary["window"]["seconds"],
        "http": {
            "requests": http["requests"],
            "rate": http["rate"],
            "error_rate": http["error_rate"],
            "p95": http["p95"],
            "in_progress": http["in_progress"],
        },
        "routes": {
            f"{r['method']} {r['route']}": {
                "rate": r["rate"],
                "p95": r["p95"],
                "error_rate": r["error_rate"],
            }
            for r in busiest
        },
        "db": {
            "rate": round(sum(e["rate"] for e in engines), 4),
            "p95": max(p95s) if p95s else None,
            "slow_per_minute": round(sum(e["slow_per_minute"] for e in engines), 4),
            "checked_out": sum(e["pool"].get("checked_out", 0) for e in engines),
        },
        "cache": {c["cache"]: c["window_hit_ratio"] for c in summary["cache"]["caches"]},
        "socketio": {
            "connections": sio["connections"],
            "received_rate": sio["events_received_rate"],
            "emitted_rate": sio["events_emitted_rate"],
            "batch_pending": sio["batch_pending"],
            "queue_depth": sio["queue_depth_max"],
        },
        "system": {
            key: system[key]
            for key in (
                "cpu_percent",
                "memory_percent",
                "disk_percent",
                "process_cpu_percent",
                "rss_bytes",
                "open_fds",
            )
        },
        "alerts_firing": len(summary["alerts"]["firing"]),
    }


class Monitor:
    """Samples the registry every ``interval`` seconds into a ring buffer of ``history_size``.

    Start it from the ASGI lifespan (:func:`asgi_perf.operations.enable` does) or explicitly with
    ``await monitor.start()`` / ``await monitor.stop()``; ``sample()`` takes one snapshot now.
    Registers itself as the registry's ``monitor`` component.

    :param alerts: an :class:`~asgi_perf.operations.AlertManager` to evaluate after each sample
        (default: the registry's, if it has one).
    :param clock: wall-clock seconds, for the snapshot times and the alert evaluation.
    """

    def __init__(
        self,
        registry: PerfRegistry,
        *,
        interval: float = DEFAULT_INTERVAL,
        history_size: int = DEFAULT_HISTORY,
        alerts: AlertManager | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check(is_positive(interval), ERR_INTERVAL, interval)
        check(is_int_at_least(history_size, 1), ERR_HISTORY, history_size)
        if registry.find_component(MONITOR) is not None:
            raise ValueError(ERR_ALREADY)
        self.registry = registry
        self.interval = float(interval)
        self.history_size = history_size
        self.clock = clock
        self._alerts = alerts
        self.summarizer = Summarizer.of(registry)
        self.summarizer.clock = clock
        self._history: deque[dict[str, Any]] = deque(maxlen=history_size)
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        registry.component(MONITOR, lambda: self)

    @property
    def alerts(self) -> AlertManager | None:
        if self._alerts is not None:
            return self._alerts
        return self.registry.find_component(ALERTS)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- sampling --------------------------------------------------------------------------------
    def _build(self) -> Summary:
        return self.summarizer.build(advance=True)

    def _record(self, summary: Summary) -> dict[str, Any]:
        alerts = self.alerts
        if alerts is not None:
            alerts.evaluate(alert_figures(summary), now=summary["generated_at"])
            # The snapshot shows the alerts as they are after this evaluation.
            states = alerts.states()
            summary["alerts"]["firing"] = [a for a in states if a["state"] == "firing"]
        snap = snapshot(summary)
        with self._lock:
            self._history.append(snap)
        return snap

    def sample(self) -> dict[str, Any]:
        """Take one snapshot now (synchronously), evaluate the alerts, return the snapshot."""
        return self._record(self._build())

    async def sample_async(self) -> dict[str, Any]:
        """Like :meth:`sample`, collecting in a worker thread and evaluating on the loop."""
        loop = asyncio.get_running_loop()
        summary = await loop.run_in_executor(None, self._build)
        return self._record(summary)

    async def _run(self) -> None:
        while True:
            try:
                await self.sample_async()
            except Exception as exc:  # noqa: BLE001 - the sampler keeps going whatever happens
                self.registry.report_error("monitor", exc)
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        """Start sampling in the running event loop (no-op if already running)."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling and wait for the sampler task to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- reading ---------------------------------------------------------------------------------
    def history(self, since: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Snapshots, oldest first: those after ``since`` (a time), at most the last ``limit``."""
        with self._lock:
            items = list(self._history)
        if since is not None:
            items = [s for s in items if s["time"] > since]
        if limit is not None:
            items = items[-limit:] if limit > 0 else []
        return items

    def latest(self) -> dict[str, Any] | None:
        with self._lock:
            return self._history[-1] if self._history else None


__all__ = ["DEFAULT_HISTORY", "DEFAULT_INTERVAL", "Monitor", "snapshot"]

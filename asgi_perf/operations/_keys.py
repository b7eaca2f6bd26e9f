"""The operations layer's shared state on a registry, by typed key (see ``ComponentKey``).

In one module because the summary, the monitor, the endpoints and ``enable()`` read each other's
state; the types are imported for the annotations only, so no module here imports another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ComponentKey

if TYPE_CHECKING:
    from ._alerts import AlertManager
    from ._monitor import Monitor
    from ._summary import Summarizer
    from ._system import SystemCollector
    from ._timing import Timings

#: The registry's alert manager (one at most).
ALERTS: ComponentKey[AlertManager] = ComponentKey("alerts")
#: The registry's monitor (one at most).
MONITOR: ComponentKey[Monitor] = ComponentKey("monitor")
#: The custom timers and counters behind ``registry.timed()`` / ``timer()`` / ``count()``.
TIMINGS: ComponentKey[Timings] = ComponentKey("timing")
#: The summary builder and its window baseline.
SUMMARIZER: ComponentKey[Summarizer] = ComponentKey("summary")
#: The ``system_*`` gauges ``enable()`` registers.
SYSTEM_COLLECTOR: ComponentKey[SystemCollector] = ComponentKey("system.collector")

__all__ = ["ALERTS", "MONITOR", "SUMMARIZER", "SYSTEM_COLLECTOR", "TIMINGS"]

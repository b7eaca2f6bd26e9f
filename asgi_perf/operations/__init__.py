"""Operations: custom timers, the monitor, alerts, system figures, the JSON summary and dashboard.

:func:`enable` turns the layer on for an app in one call (monitor with history, alert rules and
notifiers, ``system_*`` gauges); the metrics app, built with ``operations=True``, serves its
endpoints (``/metrics/summary``, ``/history``, ``/alerts``, ``/dashboard``) through
:func:`render_endpoint`. See ``docs/operations.md``.
"""

from ._alerts import (
    DEFAULT_RULES,
    FIGURES,
    SEVERITIES,
    AlertManager,
    AlertRule,
    CallbackNotifier,
    LogNotifier,
    Notifier,
    WebhookNotifier,
)
from ._enable import (
    MonitorLifespan,
    Operations,
    enable,
)
from ._endpoints import (
    render_endpoint,
)
from ._keys import (
    ALERTS,
    MONITOR,
)
from ._monitor import (
    DEFAULT_HISTORY,
    DEFAULT_INTERVAL,
    Monitor,
    snapshot,
)
from ._schema import (
    AlertsSection,
    CacheRow,
    CacheSection,
    DbSection,
    EngineRow,
    HttpSection,
    InstrumentationSection,
    PoolFigures,
    RedisTierRow,
    RouteRow,
    SocketIOSection,
    Summary,
    SystemFigures,
    TimersSection,
    TimerStats,
    Window,
)
from ._summary import (
    Summarizer,
    alert_figures,
    build_summary,
)
from ._system import (
    SystemCollector,
    SystemSampler,
)
from ._timing import (
    Timer,
    Timings,
)

__all__ = [
    "ALERTS",
    "DEFAULT_HISTORY",
    "DEFAULT_INTERVAL",
    "DEFAULT_RULES",
    "FIGURES",
    "MONITOR",
    "SEVERITIES",
    "AlertManager",
    "AlertRule",
    "AlertsSection",
    "CacheRow",
    "CacheSection",
    "CallbackNotifier",
    "DbSection",
    "EngineRow",
    "HttpSection",
    "InstrumentationSection",
    "LogNotifier",
    "Monitor",
    "MonitorLifespan",
    "Notifier",
    "Operations",
    "PoolFigures",
    "RedisTierRow",
    "RouteRow",
    "SocketIOSection",
    "Summarizer",
    "Summary",
    "SystemCollector",
    "SystemFigures",
    "SystemSampler",
    "Timer",
    "TimerStats",
    "TimersSection",
    "Timings",
    "WebhookNotifier",
    "Window",
    "alert_figures",
    "build_summary",
    "enable",
    "render_endpoint",
    "snapshot",
]

"""``enable()``: turn the operations layer on for an app in one call.

Monitor (history), alerts with notifiers and the ``system_*`` gauges, started and stopped with the
app's ASGI lifespan. The endpoints (``/metrics/summary``, ``/history``, ``/alerts``,
``/dashboard``) are served by the metrics app; :func:`asgi_perf.instrument` adds their routes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._types import ASGIApp, Message, Receive, Scope, Send
from ..registry import PerfRegistry
from ._alerts import DEFAULT_RULES, AlertManager, AlertRule, LogNotifier, Notifier
from ._keys import SYSTEM_COLLECTOR
from ._monitor import DEFAULT_HISTORY, DEFAULT_INTERVAL, Monitor
from ._system import SystemCollector
from ._webhook import WebhookNotifier

ERR_REGISTRY = "enable() needs the PerfRegistry the app reports into, got {!r}"


class MonitorLifespan:
    """ASGI middleware starting the monitor at lifespan startup and stopping it at shutdown.

    If the server runs without lifespan events, the first request starts the monitor instead.
    """

    def __init__(self, app: ASGIApp, *, monitor: Monitor) -> None:
        self.app = app
        self.monitor = monitor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        monitor = self.monitor
        if scope["type"] == "lifespan":

            async def receive_wrapper() -> Message:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await monitor.start()
                elif message["type"] == "lifespan.shutdown":
                    await monitor.stop()
                return message

            await self.app(scope, receive_wrapper, send)
            return
        if not monitor.running:
            await monitor.start()
        await self.app(scope, receive, send)


@dataclass
class Operations:
    """What :func:`enable` set up. ``app`` is the app to serve (wrapped if it was plain ASGI)."""

    registry: PerfRegistry
    monitor: Monitor
    alerts: AlertManager | None
    app: Any


def enable(
    app: Any,
    registry: PerfRegistry,
    *,
    interval: float = DEFAULT_INTERVAL,
    history_size: int = DEFAULT_HISTORY,
    alerts: bool = True,
    rules: Iterable[AlertRule] = DEFAULT_RULES,
    notifiers: Sequence[Notifier] | None = None,
    webhook_url: str | None = None,
    repeat_interval: float | None = None,
    system_metrics: bool = True,
    clock: Callable[[], float] = time.time,
) -> Operations:
    """Turn on the monitor, alerts and system gauges for ``app`` reporting into ``registry``.

    For a Starlette/FastAPI app, a middleware ties the monitor to the app's lifespan and the app is
    returned unchanged; any other ASGI app is wrapped, so serve ``enable(...).app``.

    :param interval: seconds between monitor samples.
    :param history_size: snapshots kept (a ring buffer).
    :param alerts: evaluate alert rules after each sample.
    :param rules: the alert rules (default :data:`~asgi_perf.operations.DEFAULT_RULES`).
    :param notifiers: where alerts go (default: the log, plus the webhook if given).
    :param webhook_url: also POST every alert as JSON here (never blocking the event loop).
    :param repeat_interval: re-notify firing, unacknowledged alerts this often.
    :param system_metrics: export the ``system_*`` gauges on ``/metrics``.
    """
    if not isinstance(registry, PerfRegistry):
        raise ValueError(ERR_REGISTRY.format(registry))
    manager = None
    if alerts:
        sinks: list[Notifier] = list(notifiers) if notifiers is not None else [LogNotifier()]
        if webhook_url is not None:
            sinks.append(WebhookNotifier(webhook_url))
        manager = AlertManager(
            registry, rules, notifiers=sinks, repeat_interval=repeat_interval, clock=clock
        )
    monitor = Monitor(
        registry, interval=interval, history_size=history_size, alerts=manager, clock=clock
    )
    if system_metrics:
        created = False

        def make() -> SystemCollector:
            nonlocal created
            created = True
            return SystemCollector(registry)

        collector = registry.component(SYSTEM_COLLECTOR, make)
        if created:
            registry.register(collector)
    if callable(getattr(app, "add_middleware", None)):
        app.add_middleware(MonitorLifespan, monitor=monitor)
        served = app
    else:
        served = MonitorLifespan(app, monitor=monitor)
    return Operations(registry=registry, monitor=monitor, alerts=manager, app=served)


__all__ = ["MonitorLifespan", "Operations", "enable"]

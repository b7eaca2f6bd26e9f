"""The monitor: snapshots into a bounded history, rates between them, lifespan start/stop."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_perf import PerfRegistry, instrument
from asgi_perf._types import Message
from asgi_perf.operations import (
    ALERTS,
    MONITOR,
    AlertManager,
    AlertRule,
    CallbackNotifier,
    Summary,
)
from asgi_perf.operations._enable import ERR_REGISTRY, MonitorLifespan, enable
from asgi_perf.operations._keys import SYSTEM_COLLECTOR
from asgi_perf.operations._monitor import ERR_ALREADY, ERR_HISTORY, ERR_INTERVAL, Monitor
from asgi_perf.testing import sample, scrape

from .._ops import exact
from .._time import FakeClock


def test_history_is_a_ring_buffer_with_since_and_limit(registry: PerfRegistry) -> None:
    """Only the last history_size snapshots are kept; since/limit filter them."""
    clock = FakeClock(registry.started_at)
    monitor = Monitor(registry, history_size=3, clock=clock)
    for _ in range(5):
        clock.now += 5
        monitor.sample()
    times = [s["time"] for s in monitor.history()]
    assert len(times) == 3
    assert times == sorted(times)
    assert times[-1] == round(clock.now, 3)
    assert monitor.history(since=times[0]) == monitor.history()[1:]
    assert len(monitor.history(limit=1)) == 1
    assert monitor.history(limit=0) == []
    assert monitor.latest() == monitor.history()[-1]


def test_rates_are_computed_between_snapshots(registry: PerfRegistry) -> None:
    """A snapshot's rates count only what happened since the previous snapshot."""
    clock = FakeClock(registry.started_at)
    monitor = Monitor(registry, clock=clock)
    events = registry.counter("socketio_events_received_total").labels("/", "m")
    events.inc(100)
    clock.now += 10
    first = monitor.sample()
    assert first["socketio"]["received_rate"] == 10.0
    events.inc(20)
    clock.now += 5
    second = monitor.sample()
    assert second["socketio"]["received_rate"] == 4.0
    assert second["window_seconds"] == 5


@pytest.mark.anyio
async def test_snapshot_routes_and_alerts(registry: PerfRegistry) -> None:
    """Snapshots keep per-route rates and the number of firing alerts after evaluation."""

    async def ok(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/ok", ok)])
    instrument(app, registry=registry)
    clock = FakeClock(registry.started_at)
    got: list[dict[str, Any]] = []
    AlertManager(
        registry,
        [AlertRule("Busy", "http.in_progress", ">=", 0)],
        notifiers=[CallbackNotifier(got.append)],
        clock=clock,
    )
    monitor = Monitor(registry, clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for _ in range(4):
            await c.get("/ok")
    clock.now += 2
    snap = await monitor.sample_async()
    assert snap["routes"]["GET /ok"]["rate"] == 2.0
    assert snap["http"]["requests"] == 4
    assert snap["alerts_firing"] == 1
    assert got[0]["rule"] == "Busy"
    assert monitor.alerts is registry.find_component(ALERTS)


def test_bad_configuration(registry: PerfRegistry) -> None:
    """Bad intervals, history sizes and a second monitor per registry are refused."""
    for bad in (0, -1, float("nan"), True, "5"):
        with pytest.raises(ValueError, match=exact(ERR_INTERVAL.format(bad))):
            Monitor(registry, interval=bad)  # type: ignore[arg-type]
    for bad_size in (0, 2.5, False):
        with pytest.raises(ValueError, match=exact(ERR_HISTORY.format(bad_size))):
            Monitor(registry, history_size=bad_size)  # type: ignore[arg-type]
    Monitor(registry)
    with pytest.raises(ValueError, match=exact(ERR_ALREADY)):
        Monitor(registry)
    wrong = object()
    with pytest.raises(ValueError, match=exact(ERR_REGISTRY.format(wrong))):
        enable(None, wrong)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_start_stop_samples_in_background(registry: PerfRegistry) -> None:
    """start() samples at once and then every interval; stop() ends the task."""
    monitor = Monitor(registry, interval=0.01)
    await monitor.start()
    await monitor.start()  # idempotent
    running = [monitor.running]
    for _ in range(500):
        if len(monitor.history()) >= 3:
            break
        await asyncio.sleep(0.01)
    await monitor.stop()
    running.append(monitor.running)
    assert running == [True, False]
    assert len(monitor.history()) >= 3
    await monitor.stop()


@pytest.mark.anyio
async def test_sampler_survives_errors(registry: PerfRegistry) -> None:
    """An exception while sampling is counted and the sampler keeps running."""
    monitor = Monitor(registry, interval=0.01)
    calls = {"n": 0}
    real = monitor._build

    def flaky() -> Summary:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real()

    monitor._build = flaky  # type: ignore[method-assign]
    await monitor.start()
    for _ in range(500):
        if monitor.history():
            break
        await asyncio.sleep(0.01)
    await monitor.stop()
    assert monitor.history()
    assert sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "monitor"}) == 1


@pytest.mark.anyio
async def test_lifespan_starts_and_stops_the_monitor(registry: PerfRegistry) -> None:
    """MonitorLifespan starts sampling at lifespan startup and stops it at shutdown."""
    monitor = Monitor(registry, interval=3600)
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "lifespan.startup":
                assert monitor.running
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.other":
                continue
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    app = MonitorLifespan(inner, monitor=monitor)
    messages = iter(
        [{"type": "lifespan.startup"}, {"type": "lifespan.other"}, {"type": "lifespan.shutdown"}]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: Message) -> None:
        return None

    await app({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan.startup", "lifespan.other", "lifespan.shutdown"]
    assert not monitor.running


@pytest.mark.anyio
async def test_enable_on_plain_asgi_app_starts_on_first_request(registry: PerfRegistry) -> None:
    """Without lifespan events, the first request starts the monitor; the app is wrapped."""

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    ops = enable(inner, registry, interval=3600, alerts=False, system_metrics=False)
    assert ops.alerts is None
    assert isinstance(ops.app, MonitorLifespan)
    response = await scrape(ops.app, "/")
    assert response.status == 204
    assert ops.monitor.running
    assert (await scrape(ops.app, "/")).status == 204  # already running: left alone
    await ops.monitor.stop()


def test_enable_on_starlette_registers_everything(registry: PerfRegistry) -> None:
    """On Starlette, enable() adds the lifespan middleware and exports the system gauges."""
    app = Starlette()
    ops = enable(app, registry, interval=60, webhook_url="http://127.0.0.1:9/hook")
    assert ops.app is app
    assert ops.alerts is registry.find_component(ALERTS)
    assert ops.monitor is registry.find_component(MONITOR)
    assert ops.alerts is not None
    assert [n.name for n in ops.alerts.notifiers] == ["log", "webhook"]
    assert sample(registry, "system_memory_ratio") is not None
    assert any(m.cls is MonitorLifespan for m in app.user_middleware)


def test_enable_with_own_notifiers_and_existing_collector(registry: PerfRegistry) -> None:
    """Given notifiers are used as given; an existing system collector is not registered again."""
    from asgi_perf.operations import LogNotifier, SystemCollector

    existing = registry.component(SYSTEM_COLLECTOR, lambda: SystemCollector(registry))
    registry.register(existing)
    log = LogNotifier()
    ops = enable(Starlette(), registry, notifiers=[log])
    assert ops.alerts is not None
    assert ops.alerts.notifiers == [log]
    assert registry.find_component(SYSTEM_COLLECTOR) is existing


class _RaisingCollector:
    """A scrape-time collector that always raises, as a broken integration would."""

    def collect(self) -> Any:
        raise RuntimeError("collector is broken")


@pytest.mark.anyio
async def test_a_raising_collector_does_not_stop_the_monitor_or_the_alerts(
    registry: PerfRegistry,
) -> None:
    """With a collector that raises at every collect, the running monitor still takes its
    snapshots and the alert rules are still evaluated (and notify); /metrics/summary answers; the
    failure is counted under 'collect'."""
    registry.register(_RaisingCollector())
    got: list[dict[str, Any]] = []
    AlertManager(
        registry,
        [AlertRule("Busy", "http.in_progress", ">=", 0)],
        notifiers=[CallbackNotifier(got.append)],
    )
    monitor = Monitor(registry, interval=0.01)
    await monitor.start()
    for _ in range(500):
        if len(monitor.history()) >= 2 and got:
            break
        await asyncio.sleep(0.01)
    await monitor.stop()
    assert len(monitor.history()) >= 2
    assert monitor.history()[-1]["alerts_firing"] == 1
    assert got
    assert got[0]["rule"] == "Busy"
    errors = sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "collect"})
    assert errors is not None
    assert errors >= 2
    assert sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "monitor"}) in (
        None,
        0,
    )

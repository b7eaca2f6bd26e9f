"""Alert rules, states, de-duplication, silences, acknowledgements and notifiers."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from asgi_perf import PerfRegistry
from asgi_perf.operations._alerts import (
    DEFAULT_RULES,
    ERR_ALREADY,
    ERR_DUPLICATE,
    ERR_FOR,
    ERR_METRIC,
    ERR_NOTIFIER,
    ERR_OP,
    ERR_REPEAT,
    ERR_RULE_NAME,
    ERR_SEVERITY,
    ERR_THRESHOLD,
    ERR_UNKNOWN_RULE,
    FIGURES,
    AlertManager,
    AlertRule,
    CallbackNotifier,
    LogNotifier,
    WebhookNotifier,
)
from asgi_perf.operations._webhook import ERR_URL, ERR_WEBHOOK_OPTION
from asgi_perf.testing import sample

from .._ops import exact
from .._time import FakeClock

CPU = AlertRule("HighCpu", "system.cpu_percent", ">", 80, for_seconds=60, severity="critical")


def _manager(
    registry: PerfRegistry, **kw: Any
) -> tuple[AlertManager, list[dict[str, Any]], FakeClock]:
    got: list[dict[str, Any]] = []
    clock = FakeClock(1000.0)
    manager = AlertManager(
        registry, [CPU], notifiers=[CallbackNotifier(got.append)], clock=clock, **kw
    )
    return manager, got, clock


def _firing(registry: PerfRegistry) -> float | None:
    return sample(registry, "asgi_perf_alerts_firing", {"rule": "HighCpu", "severity": "critical"})


def test_pending_then_firing_then_resolved(registry: PerfRegistry) -> None:
    """A breach is pending until it held for for_seconds, then fires once, then resolves once."""
    manager, got, clock = _manager(registry)
    assert _firing(registry) == 0
    assert manager.evaluate({"system.cpu_percent": 95}) == []
    assert manager.states()[0]["state"] == "pending"
    clock.now += 30
    manager.evaluate({"system.cpu_percent": 95})
    assert got == []
    clock.now += 30
    manager.evaluate({"system.cpu_percent": 95})
    assert [(a["state"], a["value"]) for a in got] == [("firing", 95)]
    assert _firing(registry) == 1
    for _ in range(3):  # de-duplicated: still firing, nothing new sent
        clock.now += 10
        manager.evaluate({"system.cpu_percent": 96})
    assert len(got) == 1
    clock.now += 10
    manager.evaluate({"system.cpu_percent": 20})
    assert [a["state"] for a in got] == ["firing", "resolved"]
    assert _firing(registry) == 0
    assert (
        sample(
            registry,
            "asgi_perf_alert_notifications_total",
            {"notifier": "callback", "outcome": "sent"},
        )
        == 2
    )


def test_short_breach_never_fires(registry: PerfRegistry) -> None:
    """A breach shorter than for_seconds goes back to inactive without any notification."""
    manager, got, clock = _manager(registry)
    manager.evaluate({"system.cpu_percent": 95})
    clock.now += 30
    manager.evaluate({"system.cpu_percent": 50})
    assert manager.states()[0]["state"] == "inactive"
    clock.now += 60
    manager.evaluate({"system.cpu_percent": 95})
    assert manager.states()[0]["state"] == "pending"
    assert got == []


def test_missing_figure_counts_as_no_breach(registry: PerfRegistry) -> None:
    """No data resolves a firing alert (as in Prometheus) rather than keeping it forever."""
    manager, got, clock = _manager(registry)
    manager.evaluate({"system.cpu_percent": 95})
    clock.now += 60
    manager.evaluate({"system.cpu_percent": 95})
    clock.now += 5
    manager.evaluate({})
    assert [a["state"] for a in got] == ["firing", "resolved"]


def test_repeat_until_acknowledged(registry: PerfRegistry) -> None:
    """With repeat_interval a firing alert is re-sent until someone acknowledges it."""
    manager, got, clock = _manager(registry, repeat_interval=300)
    assert manager.acknowledge("HighCpu") is False  # not firing yet
    manager.evaluate({"system.cpu_percent": 95})
    clock.now += 60
    manager.evaluate({"system.cpu_percent": 95})
    clock.now += 300
    manager.evaluate({"system.cpu_percent": 95})
    assert [a["repeat"] for a in got] == [False, True]
    assert manager.acknowledge("HighCpu", by="alice") is True
    assert manager.states()[0]["acknowledged_by"] == "alice"
    clock.now += 600
    manager.evaluate({"system.cpu_percent": 95})
    assert len(got) == 2
    clock.now += 1
    manager.evaluate({"system.cpu_percent": 10})
    assert got[-1]["state"] == "resolved"
    assert manager.states()[0]["acknowledged_by"] is None


def test_silence_suppresses_then_catches_up(registry: PerfRegistry) -> None:
    """While silenced nothing is sent; an alert still firing when the silence ends is sent then."""
    manager, got, clock = _manager(registry)
    manager.silence("HighCpu", until=clock.now + 120)
    assert manager.silences() == {"HighCpu": clock.now + 120}
    manager.evaluate({"system.cpu_percent": 95})
    clock.now += 60
    out = manager.evaluate({"system.cpu_percent": 95})
    assert out == []
    assert manager.states()[0]["state"] == "firing"
    assert manager.states()[0]["silenced_until"] == 1120
    assert _firing(registry) == 1  # the gauge tells the truth even while silenced
    clock.now += 61
    manager.evaluate({"system.cpu_percent": 95})
    assert [a["state"] for a in got] == ["firing"]


def test_silenced_resolution_and_unsilence(registry: PerfRegistry) -> None:
    """A resolution during a silence is not sent; '*' silences every rule; unsilence lifts it."""
    manager, got, clock = _manager(registry)
    manager.evaluate({"system.cpu_percent": 95})
    clock.now += 60
    manager.evaluate({"system.cpu_percent": 95})
    manager.silence("*", until=clock.now + 100)
    clock.now += 1
    out = manager.evaluate({"system.cpu_percent": 1})
    assert out[0]["silenced"] is True
    assert [a["state"] for a in got] == ["firing"]
    manager.unsilence("*")
    assert manager.silences() == {}


def test_unnotified_alert_resolves_silently(registry: PerfRegistry) -> None:
    """An alert that fired only during a silence sends no 'resolved' out of the blue later."""
    manager, got, clock = _manager(registry)
    manager.silence("HighCpu", until=clock.now + 1000)
    manager.evaluate({"system.cpu_percent": 95})
    clock.now += 60
    manager.evaluate({"system.cpu_percent": 95})
    manager.unsilence("HighCpu")
    manager.evaluate({"system.cpu_percent": 5})
    assert got == []


def test_unknown_rule_names_are_refused(registry: PerfRegistry) -> None:
    """Silencing or acknowledging a rule that does not exist is an error, not a no-op."""
    manager, _, _ = _manager(registry)
    for call in (manager.acknowledge, manager.unsilence):
        with pytest.raises(ValueError, match=exact(ERR_UNKNOWN_RULE.format("Nope"))):
            call("Nope")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "9bad"}, ERR_RULE_NAME.format("9bad")),
        ({"op": "=="}, ERR_OP.format("R", "==")),
        ({"threshold": float("nan")}, ERR_THRESHOLD.format("R", float("nan"))),
        ({"threshold": "1"}, ERR_THRESHOLD.format("R", "1")),
        ({"for_seconds": -1}, ERR_FOR.format("R", -1)),
        ({"severity": "page"}, ERR_SEVERITY.format("R", "page")),
        ({"metric": "nope"}, ERR_METRIC.format("R", "nope", ", ".join(sorted(FIGURES)))),
    ],
)
def test_bad_rules_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    """Every malformed rule raises ValueError with a clear message."""
    args: dict[str, Any] = {"name": "R", "metric": "http.error_rate", "op": ">", "threshold": 1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=exact(message)):
        AlertRule(**args)


def test_bad_manager_configuration(registry: PerfRegistry) -> None:
    """Duplicate rules, bad repeat intervals, bad notifiers and a second manager are refused."""
    with pytest.raises(ValueError, match=exact(ERR_DUPLICATE.format("HighCpu"))):
        AlertManager(registry, [CPU, CPU])
    with pytest.raises(ValueError, match=exact(ERR_REPEAT.format(0))):
        AlertManager(registry, [CPU], repeat_interval=0)
    with pytest.raises(ValueError, match=re.escape(ERR_NOTIFIER.split("{")[0])):
        AlertManager(registry, [CPU], notifiers=[object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=exact(ERR_NOTIFIER.format(42))):
        CallbackNotifier(42)  # type: ignore[arg-type]
    AlertManager(registry, [CPU])
    with pytest.raises(ValueError, match=exact(ERR_ALREADY)):
        AlertManager(registry, [CPU])


def test_default_rules_cover_the_seed_thresholds() -> None:
    """The defaults carry the seed systems' thresholds."""
    by_metric = {r.metric: r for r in DEFAULT_RULES}
    assert by_metric["system.cpu_percent"].threshold == 80
    assert by_metric["system.memory_percent"].threshold == 85
    assert by_metric["system.disk_percent"].threshold == 90
    assert by_metric["db.p95_seconds"].threshold == 1.0
    assert by_metric["socketio.batch_wait_p95_seconds"].threshold == 5.0
    assert by_metric["http.error_rate"].threshold == 0.05
    assert by_metric["cache.hit_ratio"].op == "<"


def test_extra_figures_and_their_failures(registry: PerfRegistry) -> None:
    """custom.* rules read extra_figures; a raising extra_figures is counted, rules go on."""
    rule = AlertRule("Queue", "custom.queue", ">=", 5)
    got: list[dict[str, Any]] = []
    figures: dict[str, float | None] = {"custom.queue": 7}
    calls = {"n": 0}

    def extra() -> dict[str, float | None]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("broken")
        return figures

    manager = AlertManager(
        registry, [rule, CPU], notifiers=[CallbackNotifier(got.append)], extra_figures=extra
    )
    manager.evaluate({})
    assert got[0]["rule"] == "Queue"
    manager.evaluate({"system.cpu_percent": 99})
    assert sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "alerts"}) == 1
    # The broken call left custom.queue without data: that resolves Queue.
    assert {a["rule"]: a["state"] for a in manager.states()} == {
        "Queue": "resolved",
        "HighCpu": "pending",
    }
    assert manager.states()[0]["rule"] == "HighCpu"  # pending sorts before resolved


def test_broken_notifier_does_not_stop_the_others(registry: PerfRegistry) -> None:
    """A notifier that raises is counted as failed; the next notifier still gets the alert."""
    got: list[dict[str, Any]] = []

    def broken(alert: dict[str, Any]) -> None:
        raise RuntimeError("down")

    rule = AlertRule("Now", "http.in_progress", ">", 0)
    manager = AlertManager(
        registry,
        [rule],
        notifiers=[CallbackNotifier(broken, name="broken"), CallbackNotifier(got.append)],
    )
    manager.evaluate({"http.in_progress": 3})
    assert len(got) == 1
    assert (
        sample(
            registry,
            "asgi_perf_alert_notifications_total",
            {"notifier": "broken", "outcome": "failed"},
        )
        == 1
    )


def test_log_notifier_levels(registry: PerfRegistry, caplog: pytest.LogCaptureFixture) -> None:
    """Critical alerts log at ERROR, warnings at WARNING, resolutions at INFO."""
    warn = AlertRule("Warn", "http.in_progress", ">", 0, severity="warning")
    clock = FakeClock(1000.0)
    manager = AlertManager(
        registry,
        [CPU.__class__("Crit", "http.in_progress", ">", 0, severity="critical"), warn],
        notifiers=[LogNotifier()],
        clock=clock,
    )
    with caplog.at_level(logging.INFO, logger="asgi_perf.alerts"):
        manager.evaluate({"http.in_progress": 1})
        manager.evaluate({"http.in_progress": 0})
    levels = {
        (r.levelname, r.getMessage().split()[1], r.getMessage().split()[2].rstrip(":"))
        for r in caplog.records
    }
    assert ("ERROR", "Crit", "firing") in levels
    assert ("WARNING", "Warn", "firing") in levels
    assert ("INFO", "Crit", "resolved") in levels


@pytest.mark.anyio
async def test_async_callback_runs_on_the_loop(registry: PerfRegistry) -> None:
    """An async callback is scheduled on the running loop; its outcome is counted when done."""
    got: list[dict[str, Any]] = []

    async def callback(alert: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        got.append(alert)

    async def failing(alert: dict[str, Any]) -> None:
        raise RuntimeError("no")

    rule = AlertRule("Now", "http.in_progress", ">", 0)
    manager = AlertManager(
        registry,
        [rule],
        notifiers=[CallbackNotifier(callback, name="ok"), CallbackNotifier(failing, name="bad")],
    )
    manager.evaluate({"http.in_progress": 1})
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(got) == 1
    assert (
        sample(
            registry, "asgi_perf_alert_notifications_total", {"notifier": "ok", "outcome": "sent"}
        )
        == 1
    )
    assert (
        sample(
            registry,
            "asgi_perf_alert_notifications_total",
            {"notifier": "bad", "outcome": "failed"},
        )
        == 1
    )


def test_async_callback_without_a_loop(registry: PerfRegistry) -> None:
    """Outside an event loop an async callback is run to completion at once."""
    got: list[dict[str, Any]] = []

    async def callback(alert: dict[str, Any]) -> None:
        got.append(alert)

    manager = AlertManager(
        registry,
        [AlertRule("Now", "http.in_progress", ">", 0)],
        notifiers=[CallbackNotifier(callback)],
    )
    manager.evaluate({"http.in_progress": 1})
    assert len(got) == 1


# -- webhook against a real local HTTP receiver ---
class Receiver:
    """A real HTTP server on 127.0.0.1 recording POSTed JSON; statuses are served in order."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.gate = threading.Event()
        self.gate.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.gate.wait(30)
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                receiver.headers.append(dict(self.headers))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([])
    yield r
    r.close()


def _fire(registry: PerfRegistry, notifier: WebhookNotifier) -> AlertManager:
    manager = AlertManager(
        registry, [AlertRule("Now", "http.in_progress", ">", 0)], notifiers=[notifier]
    )
    manager.evaluate({"http.in_progress": 2})
    return manager


def test_webhook_posts_json(registry: PerfRegistry, receiver: Receiver) -> None:
    """The alert arrives as a JSON POST with the configured headers."""
    hook = WebhookNotifier(receiver.url, headers={"X-Token": "s3"})
    _fire(registry, hook)
    assert hook.flush(timeout=30)
    assert receiver.bodies[0]["rule"] == "Now"
    assert receiver.bodies[0]["state"] == "firing"
    assert receiver.headers[0]["X-Token"] == "s3"
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert (
        sample(
            registry,
            "asgi_perf_alert_notifications_total",
            {"notifier": "webhook", "outcome": "sent"},
        )
        == 1
    )
    hook.close()


def test_webhook_retries_5xx_then_succeeds(registry: PerfRegistry, receiver: Receiver) -> None:
    """5xx and 429 are retried with backoff until the receiver accepts."""
    receiver.statuses[:] = [503, 429]
    hook = WebhookNotifier(receiver.url, backoff=0.01, retries=3)
    _fire(registry, hook)
    assert hook.flush(timeout=30)
    assert len(receiver.bodies) == 3
    assert (
        sample(
            registry,
            "asgi_perf_alert_notifications_total",
            {"notifier": "webhook", "outcome": "sent"},
        )
        == 1
    )
    hook.close()


def test_webhook_gives_up(registry: PerfRegistry, receiver: Receiver) -> None:
    """A 4xx is not retried; a dead receiver fails after the retries; both count as failed."""
    receiver.statuses[:] = [400]
    hook = WebhookNotifier(receiver.url, backoff=0.01)
    _fire(registry, hook)
    assert hook.flush(timeout=30)
    assert len(receiver.bodies) == 1
    dead = WebhookNotifier(
        "http://127.0.0.1:9/nothing", retries=1, backoff=0.01, timeout=2, name="dead"
    )
    outcomes: list[str] = []
    dead.notify({"rule": "x", "state": "firing"}, outcomes.append)
    assert dead.flush(timeout=30)
    assert outcomes == ["failed"]
    assert (
        sample(
            registry,
            "asgi_perf_alert_notifications_total",
            {"notifier": "webhook", "outcome": "failed"},
        )
        == 1
    )
    hook.close()
    dead.close()


def test_webhook_logs_never_show_the_url_path(
    registry: PerfRegistry, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Failure logs name the receiver as scheme://host:port: no credentials, path or query.

    Slack- and Teams-style webhook URLs carry their secret token in the path.
    """
    port = receiver.server.server_address[1]
    secret = "/services/T000/B000/SeCrEtToKeN?sig=QuErYsEcReT"
    receiver.statuses[:] = [403]
    refused = WebhookNotifier(f"http://127.0.0.1:{port}{secret}", backoff=0.01)
    dead = WebhookNotifier(f"http://127.0.0.1:9{secret}", retries=1, backoff=0.01, timeout=2)
    with caplog.at_level(logging.DEBUG, logger="asgi_perf.alerts"):
        for hook in (refused, dead):
            hook.notify({"rule": "HighCpu", "state": "firing"}, lambda outcome: None)
            assert hook.flush(timeout=30)
            hook.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"webhook http://127.0.0.1:{port} refused" in m for m in messages)
    assert any("webhook http://127.0.0.1:9: alert HighCpu not delivered" in m for m in messages)
    for leak in ("SeCrEtToKeN", "QuErYsEcReT", "services"):
        assert leak not in caplog.text


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("https://hooks.example.com/services/T0/B0/SeCrEt", "https://hooks.example.com"),
        ("http://example.com:8080/x?token=t#frag", "http://example.com:8080"),
        ("http://[::1]:9/hook", "http://[::1]:9"),
    ],
)
def test_webhook_target_hides_path_and_query(url: str, target: str) -> None:
    """The name a webhook is logged by keeps scheme, host and port, and drops the rest."""
    assert WebhookNotifier(url).target == target


@pytest.mark.anyio
async def test_webhook_never_blocks_the_loop(registry: PerfRegistry, receiver: Receiver) -> None:
    """notify() returns while the receiver is still stuck; a full queue drops and counts."""
    receiver.gate.clear()  # the receiver hangs until released
    hook = WebhookNotifier(receiver.url, queue_size=1, timeout=30)
    manager = AlertManager(
        registry,
        [
            AlertRule("A", "http.in_progress", ">", 0),
            AlertRule("B", "http.in_progress", ">", 0),
            AlertRule("C", "http.in_progress", ">", 0),
        ],
        notifiers=[hook],
    )
    manager.evaluate(
        {"http.in_progress": 1}
    )  # three alerts: one in flight, one queued, one dropped
    assert not receiver.gate.is_set()  # evaluate() came back while the receiver still blocks
    await asyncio.sleep(0)
    dropped = sample(
        registry,
        "asgi_perf_alert_notifications_total",
        {"notifier": "webhook", "outcome": "dropped"},
    )
    assert dropped is not None
    assert dropped >= 1
    receiver.gate.set()
    assert hook.flush(timeout=30)
    hook.close()
    hook.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "ftp://x/"}, ERR_URL.format("scheme 'ftp'")),
        ({"url": "/relative"}, ERR_URL.format("no scheme")),
        ({"timeout": 0}, ERR_WEBHOOK_OPTION.format("timeout", "> 0", 0)),
        ({"retries": -1}, ERR_WEBHOOK_OPTION.format("retries", ">= 0", -1)),
        ({"backoff": "1"}, ERR_WEBHOOK_OPTION.format("backoff", ">= 0", "1")),
        ({"queue_size": 0}, ERR_WEBHOOK_OPTION.format("queue_size", ">= 1", 0)),
    ],
)
def test_webhook_configuration_is_checked(kwargs: dict[str, Any], message: str) -> None:
    """Bad webhook options raise ValueError at construction."""
    args: dict[str, Any] = {"url": "http://127.0.0.1/hook"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=exact(message)):
        WebhookNotifier(**args)


def test_webhook_close_and_flush_without_worker() -> None:
    """A webhook that never sent anything flushes and closes at once."""
    hook = WebhookNotifier("http://127.0.0.1/hook")
    assert hook.flush(timeout=1)
    hook.close()

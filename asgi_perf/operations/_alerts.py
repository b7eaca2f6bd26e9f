"""In-process threshold alerts: rules, pending -> firing -> resolved, silences, acks, notifiers.

For teams without a Prometheus server. Each rule compares one flat figure of the summary (see
:func:`asgi_perf.operations.alert_figures`) with a threshold; it must hold for ``for_seconds``
before the alert fires. Notifications are sent on transitions only (de-duplicated per rule),
optionally repeated every ``repeat_interval`` until acknowledged, and suppressed while a silence
runs. Every rule's state is exported as ``asgi_perf_alerts_firing{rule,severity}``.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .._checks import is_finite
from ..registry import PerfRegistry
from ._keys import ALERTS
from ._webhook import WebhookNotifier

logger = logging.getLogger("asgi_perf.alerts")

#: The figures a rule may watch (see ``alert_figures``); ``custom.*`` comes from ``extra_figures``.
FIGURES = frozenset(
    {
        "system.cpu_percent",
        "system.memory_percent",
        "system.disk_percent",
        "system.process_cpu_percent",
        "http.error_rate",
        "http.p95_seconds",
        "http.in_progress",
        "db.p95_seconds",
        "db.slow_per_minute",
        "db.pool_checkout_timeouts",
        "cache.hit_ratio",
        "socketio.queue_depth",
        "socketio.batch_pending",
        "socketio.batch_wait_p95_seconds",
        "instrumentation.errors",
    }
)
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
SEVERITIES = ("info", "warning", "critical")
_RULE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

ERR_RULE_NAME = "alert rule name must match [A-Za-z][A-Za-z0-9_]{{0,63}}, got {!r}"
ERR_METRIC = "alert rule {!r} watches unknown figure {!r}; known: {}, or custom.<name>"
ERR_OP = "alert rule {!r}: op must be one of > >= < <=, got {!r}"
ERR_THRESHOLD = "alert rule {!r}: threshold must be a finite number, got {!r}"
ERR_FOR = "alert rule {!r}: for_seconds must be a number >= 0, got {!r}"
ERR_SEVERITY = "alert rule {!r}: severity must be one of info, warning, critical, got {!r}"
ERR_DUPLICATE = "two alert rules are named {!r}; rule names must be unique"
ERR_UNKNOWN_RULE = "no alert rule named {!r}"
ERR_REPEAT = "repeat_interval must be None or a number > 0, got {!r}"
ERR_NOTIFIER = "notifiers must have a name and a notify(alert, report) method, got {!r}"
ERR_ALREADY = (
    "this registry already has an AlertManager; "
    "use registry.find_component(asgi_perf.operations.ALERTS)"
)


@dataclass(frozen=True)
class AlertRule:
    """``metric op threshold`` held for ``for_seconds`` -> an alert of ``severity``."""

    name: str
    metric: str
    op: str
    threshold: float
    for_seconds: float = 0.0
    severity: str = "warning"
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _RULE_NAME.match(self.name):
            raise ValueError(ERR_RULE_NAME.format(self.name))
        if self.metric not in FIGURES and not (
            isinstance(self.metric, str) and self.metric.startswith("custom.")
        ):
            raise ValueError(ERR_METRIC.format(self.name, self.metric, ", ".join(sorted(FIGURES))))
        if self.op not in OPERATORS:
            raise ValueError(ERR_OP.format(self.name, self.op))
        if not is_finite(self.threshold):
            raise ValueError(ERR_THRESHOLD.format(self.name, self.threshold))
        if not is_finite(self.for_seconds) or self.for_seconds < 0:
            raise ValueError(ERR_FOR.format(self.name, self.for_seconds))
        if self.severity not in SEVERITIES:
            raise ValueError(ERR_SEVERITY.format(self.name, self.severity))

    def breached(self, value: float | None) -> bool:
        return value is not None and OPERATORS[self.op](value, self.threshold)


#: The seed systems' thresholds, plus latency, cache, slow-query and Socket.IO rules.
DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule("HighCpu", "system.cpu_percent", ">", 80, 120, "warning", "Host CPU above 80%"),
    AlertRule("HighMemory", "system.memory_percent", ">", 85, 120, "warning", "Memory above 85%"),
    AlertRule("DiskAlmostFull", "system.disk_percent", ">", 90, 300, "critical", "Disk above 90%"),
    AlertRule("HighErrorRate", "http.error_rate", ">", 0.05, 60, "critical", "5xx above 5%"),
    AlertRule("HighLatency", "http.p95_seconds", ">", 1.0, 120, "warning", "A route's p95 > 1 s"),
    AlertRule("SlowDatabase", "db.p95_seconds", ">", 1.0, 60, "warning", "Query p95 above 1 s"),
    AlertRule(
        "ManySlowQueries", "db.slow_per_minute", ">", 10, 120, "warning", "> 10 slow queries/min"
    ),
    AlertRule("LowCacheHitRatio", "cache.hit_ratio", "<", 0.8, 300, "warning", "Hit ratio < 80%"),
    AlertRule(
        "SlowSocketIOSend",
        "socketio.batch_wait_p95_seconds",
        ">",
        5.0,
        30,
        "critical",
        "Socket.IO send delay above 5 s",
    ),
    AlertRule(
        "SocketIOQueueBacklog",
        "socketio.queue_depth",
        ">",
        100,
        60,
        "warning",
        "A Socket.IO client's outgoing queue holds over 100 packets",
    ),
)

Report = Callable[[str], None]


class Notifier(Protocol):
    """Receives alert notifications. ``notify`` must return quickly and call ``report`` with the
    outcome (``sent``, ``failed`` or ``dropped``), now or later from another thread."""

    name: str

    def notify(self, alert: dict[str, Any], report: Report) -> None: ...


class LogNotifier:
    """Logs firing alerts at WARNING (``critical``: ERROR) and resolutions at INFO."""

    name = "log"

    def __init__(self, logger_name: str = "asgi_perf.alerts") -> None:
        self._logger = logging.getLogger(logger_name)

    def notify(self, alert: dict[str, Any], report: Report) -> None:
        if alert["state"] == "resolved":
            level = logging.INFO
        else:
            level = logging.ERROR if alert["severity"] == "critical" else logging.WARNING
        self._logger.log(
            level,
            "alert %s %s: %s %s %s (value %s) %s",
            alert["rule"],
            alert["state"],
            alert["metric"],
            alert["op"],
            alert["threshold"],
            alert["value"],
            alert["description"],
        )
        report("sent")


class CallbackNotifier:
    """Calls ``callback(alert)``; a coroutine function is scheduled on the running event loop."""

    def __init__(self, callback: Callable[[dict[str, Any]], Any], name: str = "callback") -> None:
        if not callable(callback):
            raise ValueError(ERR_NOTIFIER.format(callback))
        self.name = name
        self._callback = callback
        self._tasks: set[asyncio.Task[Any]] = set()

    def notify(self, alert: dict[str, Any], report: Report) -> None:
        result = self._callback(alert)
        if not asyncio.iscoroutine(result):
            report("sent")
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(result)
            report("sent")
            return
        task = loop.create_task(result)
        self._tasks.add(task)  # keep a reference: the loop only holds tasks weakly

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            report("failed" if t.cancelled() or t.exception() is not None else "sent")

        task.add_done_callback(done)


@dataclass
class _State:
    rule: AlertRule
    state: str = "inactive"
    since: float | None = None
    value: float | None = None
    fired_at: float | None = None
    resolved_at: float | None = None
    notified: bool = False
    last_notified: float | None = None
    acknowledged_by: str | None = None


class AlertManager:
    """Evaluates rules against figures and dispatches notifications.

    :param registry: registry to export ``asgi_perf_alerts_firing`` into; the manager registers
        itself there as the ``alerts`` component (one per registry).
    :param rules: the rules (default :data:`DEFAULT_RULES`).
    :param notifiers: where notifications go (default: a :class:`LogNotifier`).
    :param repeat_interval: re-notify a firing, unacknowledged alert this often (``None``: never).
    :param extra_figures: ``() -> {"custom.x": value}`` for rules on your own figures.
    :param clock: wall-clock seconds (tests pass a fake one).
    """

    def __init__(
        self,
        registry: PerfRegistry,
        rules: Iterable[AlertRule] = DEFAULT_RULES,
        *,
        notifiers: Sequence[Notifier] | None = None,
        repeat_interval: float | None = None,
        extra_figures: Callable[[], dict[str, float | None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        rules = tuple(rules)
        names = [r.name for r in rules]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(ERR_DUPLICATE.format(name))
        if repeat_interval is not None and (not is_finite(repeat_interval) or repeat_interval <= 0):
            raise ValueError(ERR_REPEAT.format(repeat_interval))
        notifiers = list(notifiers) if notifiers is not None else [LogNotifier()]
        for notifier in notifiers:
            if not isinstance(getattr(notifier, "name", None), str) or not callable(
                getattr(notifier, "notify", None)
            ):
                raise ValueError(ERR_NOTIFIER.format(notifier))
        if registry.find_component(ALERTS) is not None:
            raise ValueError(ERR_ALREADY)
        self.registry = registry
        self.rules = rules
        self.notifiers = notifiers
        self.repeat_interval = repeat_interval
        self.extra_figures = extra_figures
        self.clock = clock
        self._states = {rule.name: _State(rule) for rule in rules}
        self._silences: dict[str, float] = {}
        self._lock = threading.Lock()
        self._firing = registry.gauge("asgi_perf_alerts_firing")
        self._sent = registry.counter("asgi_perf_alert_notifications_total")
        for rule in rules:
            # Exported at 0 from the start: "absent" and "not firing" must not look alike.
            self._firing.labels(rule.name, rule.severity).set(0)
        registry.component(ALERTS, lambda: self)

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(
        self, figures: dict[str, float | None], now: float | None = None
    ) -> list[dict[str, Any]]:
        """Advance every rule with these figures; returns the notifications sent (or silenced)."""
        now = self.clock() if now is None else now
        if self.extra_figures is not None:
            try:
                figures = {**figures, **self.extra_figures()}
            except Exception as exc:  # noqa: BLE001 - a user callback must not stop the alerts
                self.registry.report_error("alerts", exc)
        outgoing: list[dict[str, Any]] = []
        with self._lock:
            for st in self._states.values():
                note = self._advance(st, figures.get(st.rule.metric), now)
                if note is not None:
                    outgoing.append(note)
        for alert in outgoing:
            if not alert["silenced"]:
                self._dispatch(alert)
        return outgoing

    def _advance(self, st: _State, value: float | None, now: float) -> dict[str, Any] | None:
        rule = st.rule
        st.value = value
        silenced = self._silenced(rule.name, now)
        if rule.breached(value):
            if st.state in ("inactive", "resolved"):
                st.state, st.since, st.resolved_at = "pending", now, None
            if st.state == "pending" and now - (st.since or now) >= rule.for_seconds:
                st.state, st.fired_at, st.notified, st.acknowledged_by = "firing", now, False, None
                self._firing.labels(rule.name, rule.severity).set(1)
            if st.state != "firing" or silenced:
                return None
            if not st.notified:
                return self._note(st, now, repeat=False)
            due = (
                self.repeat_interval is not None
                and st.acknowledged_by is None
                and now - (st.last_notified or now) >= self.repeat_interval
            )
            return self._note(st, now, repeat=True) if due else None
        if st.state == "pending":
            st.state, st.since = "inactive", None
        elif st.state == "firing":
            st.state, st.resolved_at = "resolved", now
            self._firing.labels(rule.name, rule.severity).set(0)
            was_notified = st.notified
            st.acknowledged_by = None
            # Resolutions follow only alerts someone heard about: no "resolved" out of the blue.
            if was_notified:
                note = self._note(st, now, repeat=False)
                note["silenced"] = silenced
                return note
        return None

    def _note(self, st: _State, now: float, *, repeat: bool) -> dict[str, Any]:
        if st.state == "firing":
            st.notified = True
        st.last_notified = now
        alert = self._describe(st, now)
        alert["repeat"] = repeat
        alert["silenced"] = False
        return alert

    def _describe(self, st: _State, now: float) -> dict[str, Any]:
        rule = st.rule
        return {
            "rule": rule.name,
            "severity": rule.severity,
            "state": st.state,
            "metric": rule.metric,
            "op": rule.op,
            "threshold": rule.threshold,
            "for_seconds": rule.for_seconds,
            "value": st.value,
            "since": st.since,
            "fired_at": st.fired_at,
            "resolved_at": st.resolved_at,
            "acknowledged_by": st.acknowledged_by,
            "silenced_until": self._silence_end(rule.name, now),
            "description": rule.description,
            "time": now,
        }

    def _dispatch(self, alert: dict[str, Any]) -> None:
        labels = self._sent.labels
        for notifier in self.notifiers:

            def report(outcome: str, _name: str = notifier.name) -> None:
                labels(_name, outcome).inc()

            try:
                notifier.notify(dict(alert), report)
            except Exception as exc:  # noqa: BLE001 - one broken notifier must not stop the rest
                report("failed")
                self.registry.report_error("alerts", exc)

    # -- silences and acknowledgements -----------------------------------------------------------
    def _check_rule(self, name: str) -> None:
        if name != "*" and name not in self._states:
            raise ValueError(ERR_UNKNOWN_RULE.format(name))

    def silence(self, rule: str, until: float) -> None:
        """Send nothing for ``rule`` (``"*"``: every rule) until the wall-clock time ``until``.

        States keep changing meanwhile; an alert still firing when the silence ends is notified
        then.
        """
        self._check_rule(rule)
        with self._lock:
            self._silences[rule] = float(until)

    def unsilence(self, rule: str) -> None:
        self._check_rule(rule)
        with self._lock:
            self._silences.pop(rule, None)

    def _silence_end(self, rule: str, now: float) -> float | None:
        ends = [u for key in (rule, "*") if (u := self._silences.get(key)) is not None and u > now]
        return max(ends) if ends else None

    def _silenced(self, rule: str, now: float) -> bool:
        return self._silence_end(rule, now) is not None

    def acknowledge(self, rule: str, by: str = "operator") -> bool:
        """Stop repeat notifications of a firing alert until it resolves (``False``: not firing)."""
        self._check_rule(rule)
        with self._lock:
            st = self._states.get(rule)
            if st is None or st.state != "firing":
                return False
            st.acknowledged_by = by
            return True

    # -- reading ---------------------------------------------------------------------------------
    def states(self) -> list[dict[str, Any]]:
        """Every rule's current state (firing first, then pending, then the rest)."""
        now = self.clock()
        order = {"firing": 0, "pending": 1, "resolved": 2, "inactive": 3}
        with self._lock:
            out = [self._describe(st, now) for st in self._states.values()]
        out.sort(key=lambda a: (order[a["state"]], a["rule"]))
        return out

    def silences(self) -> dict[str, float]:
        now = self.clock()
        with self._lock:
            return {rule: until for rule, until in self._silences.items() if until > now}


__all__ = [
    "DEFAULT_RULES",
    "FIGURES",
    "SEVERITIES",
    "AlertManager",
    "AlertRule",
    "CallbackNotifier",
    "LogNotifier",
    "Notifier",
    "WebhookNotifier",
]

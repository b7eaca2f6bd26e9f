"""Fault injection: whatever breaks inside the instrumentation, the response is unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from asgi_perf import PerfMiddleware, PerfRegistry
from asgi_perf.http import PerfMiddleware as MW
from asgi_perf.http import RouteResolver
from asgi_perf.http._stats import ExemplarHttpStats, HttpStats

from .._asgi import Receiver, Sender, http_scope

pytestmark = pytest.mark.anyio


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 201, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": b"part-1 ", "more_body": True})
    await send({"type": "http.response.body", "body": b"part-2"})


async def reference() -> list[Any]:
    sender = Sender()
    await app(http_scope("/x"), Receiver(), sender)
    return sender.messages


def boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("instrumentation bug")


FAULTS = [
    (RouteResolver, "resolve"),
    (HttpStats, "record"),
    (ExemplarHttpStats, "record"),  # the store a registry with exemplars (the default) uses
]


@pytest.mark.parametrize(("owner", "attr"), FAULTS, ids=[f"{o.__name__}.{a}" for o, a in FAULTS])
async def test_internal_step_raising_leaves_response_unchanged(
    monkeypatch: pytest.MonkeyPatch, owner: type, attr: str
) -> None:
    """Each internal step raising: the app's messages are unchanged and the error is counted."""
    monkeypatch.setattr(owner, attr, boom)
    # An exemplar source of its own: the store with exemplars, with or without OpenTelemetry.
    registry = PerfRegistry(exemplars=False if owner is HttpStats else lambda: None)
    mw = PerfMiddleware(app, registry=registry)
    sender = Sender()
    await mw(http_scope("/x"), Receiver(), sender)
    assert sender.messages == await reference()
    errors = registry.prometheus.get_sample_value(
        "asgi_perf_instrumentation_errors_total", {"component": "http"}
    )
    assert errors == 1
    assert registry.prometheus.get_sample_value("http_requests_in_progress", {"method": "GET"}) == 0


@pytest.mark.parametrize("attr", ["record_exception", "record"])
async def test_recording_failure_on_error_path_reraises_the_app_error(
    monkeypatch: pytest.MonkeyPatch, attr: str
) -> None:
    """If recording a failed request fails, the app's own exception still propagates unchanged
    and the recording error is counted."""
    registry = PerfRegistry(exemplars=False)  # the plain store, the one patched

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("app error")

    monkeypatch.setattr(HttpStats, attr, boom)
    with pytest.raises(KeyError, match="app error"):
        await PerfMiddleware(failing, registry=registry)(http_scope("/x"), Receiver(), Sender())
    errors = registry.prometheus.get_sample_value(
        "asgi_perf_instrumentation_errors_total", {"component": "http"}
    )
    assert errors == 1


async def test_unusual_path_failure_is_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure recording an unusual request (no response sent) is counted, never raised."""
    registry = PerfRegistry()

    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None

    monkeypatch.setattr(MW, "_record_unusual", boom)
    await PerfMiddleware(silent, registry=registry)(http_scope("/x"), Receiver(), Sender())
    errors = registry.prometheus.get_sample_value(
        "asgi_perf_instrumentation_errors_total", {"component": "http"}
    )
    assert errors == 1


async def test_exception_recording_failure_still_reraises_the_app_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If recording the exception fails, the app's own exception still propagates unchanged."""
    registry = PerfRegistry()

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("app error")

    monkeypatch.setattr(HttpStats, "record_exception", boom)
    with pytest.raises(KeyError, match="app error"):
        await PerfMiddleware(failing, registry=registry)(http_scope("/x"), Receiver(), Sender())


async def test_clock_failure_in_send_path_is_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while timing a sent message is counted, and the message is still delivered."""
    registry = PerfRegistry()
    mw = PerfMiddleware(app, registry=registry)
    calls = 0
    import time

    def flaky() -> float:
        nonlocal calls
        calls += 1
        if calls == 2:  # the response-start timestamp
            raise OSError("clock")
        return time.perf_counter()

    monkeypatch.setattr("asgi_perf.http._middleware.perf_counter", flaky)
    sender = Sender()
    await mw(http_scope("/x"), Receiver(), sender)
    assert sender.messages == await reference()
    errors = registry.prometheus.get_sample_value(
        "asgi_perf_instrumentation_errors_total", {"component": "http"}
    )
    assert errors == 1


class Hook:
    def __init__(self, fail_start: bool = False, fail_finish: bool = False) -> None:
        self.fail_start, self.fail_finish = fail_start, fail_finish
        self.calls: list[Any] = []

    def request_started(self) -> Any:
        if self.fail_start:
            raise RuntimeError("start")
        self.calls.append("start")
        return len(self.calls)

    def request_finished(self, state: Any) -> None:
        if self.fail_finish:
            raise RuntimeError("finish")
        self.calls.append(("finish", state))


async def test_request_hooks_run_around_each_request() -> None:
    """Hooks run before the app and after it, with their own state; failures are contained."""
    registry = PerfRegistry()
    good, bad_start, bad_finish = Hook(), Hook(fail_start=True), Hook(fail_finish=True)
    registry.request_hooks.extend([good, bad_start, bad_finish])
    sender = Sender()
    await PerfMiddleware(app, registry=registry)(http_scope("/x"), Receiver(), sender)
    assert sender.messages == await reference()
    assert good.calls == ["start", ("finish", 1)]
    assert bad_finish.calls == ["start"]
    errors = registry.prometheus.get_sample_value(
        "asgi_perf_instrumentation_errors_total", {"component": "http"}
    )
    assert errors == 2

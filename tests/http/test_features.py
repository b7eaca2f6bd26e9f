"""The peers' features: constant and per-request labels, skip_methods, drop_unmatched, the
environment switch and per-request hooks, through PerfMiddleware and instrument(), with real
requests and hostile callables."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from asgi_perf import OTHER, OVERFLOW, UNMATCHED, PerfMiddleware, PerfRegistry, RequestInfo
from asgi_perf import instrument as instrument_app
from asgi_perf.export import _mp_store as store
from asgi_perf.http import DISABLE_ENV
from asgi_perf.http._features import (
    ERR_ENV_NAME,
    ERR_ENV_VALUE,
    ERR_HOOK,
    ERR_LABEL_CALLABLE,
    ERR_LABEL_LIMIT,
    ERR_LABEL_NAME,
    ERR_LABEL_RESERVED,
    ERR_LABEL_TWICE,
    ERR_LABEL_VALUE,
    ERR_MAPPING,
    ERR_SKIP_METHOD,
    ERR_TIMEOUT,
    FAILED,
    MAX_LABEL_VALUE_LENGTH,
    settle,
)
from asgi_perf.http._stats import ERR_SHARED_LABELS
from asgi_perf.testing import sample, samples

from .._asgi import Receiver, Sender, http_scope

pytestmark = pytest.mark.anyio


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def echo(request: Request) -> Response:
    return PlainTextResponse(str(len(await request.body())))


async def boom(request: Request) -> Response:
    raise RuntimeError("boom")


def app() -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{item_id}", ok, methods=["GET", "POST", "OPTIONS"]),
            Route("/boom", boom),
            Route("/echo", echo, methods=["POST"]),
        ]
    )


async def call(mw: Any, *requests: tuple[str, str] | str, **headers: str) -> list[int]:
    """Serve requests (``path`` or ``(method, path)``) through ``mw``; return the statuses."""
    statuses = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mw, raise_app_exceptions=False),
        base_url="http://test",
    ) as client:
        for request in requests:
            method, path = ("GET", request) if isinstance(request, str) else request
            sent = {name.replace("_", "-"): value for name, value in headers.items()}
            response = await client.request(method, path, headers=sent)
            statuses.append(response.status_code)
    return statuses


def errors(registry: PerfRegistry, component: str) -> float:
    value = registry.prometheus.get_sample_value(
        "asgi_perf_instrumentation_errors_total", {"component": component}
    )
    return value or 0.0


def header(name: str) -> Callable[[Scope], str | None]:
    raw = name.encode()

    def read(scope: Scope) -> str | None:
        for key, value in scope["headers"]:
            if key == raw:
                return str(value.decode())
        return None

    return read


# -- constant labels --------------------------------------------------------------------------------
async def test_constant_labels_on_every_http_series() -> None:
    """labels={...} adds the same labels to every HTTP series, the in-progress gauge included,
    and the exposition still parses."""
    registry = PerfRegistry()
    mw = PerfMiddleware(app(), registry=registry, labels={"app_name": "shop", "env": "prod"})
    assert type(mw) is PerfMiddleware  # constant labels cost nothing per request
    await call(mw, "/items/1", "/boom")
    for name in (
        "http_requests_total",
        "http_request_ttfb_seconds",
        "http_request_size_bytes",
        "http_requests_in_progress",
        "http_exceptions_total",
    ):
        found = samples(registry, name, suffix="_count" if "_total" not in name else "")
        if name == "http_requests_in_progress":
            found = samples(registry, name)
        assert found, name
        assert all(s["app_name"] == "shop" and s["env"] == "prod" for s in found), found
    labels = {"method": "GET", "route": "/items/{item_id}", "status": "200"}
    assert sample(registry, "http_requests_total", {**labels, "app_name": "shop", "env": "prod"})
    text = generate_latest(registry.prometheus).decode()
    assert list(text_string_to_metric_families(text))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"route": "x"}, ERR_LABEL_RESERVED.format("route")),
        ({"status": "x"}, ERR_LABEL_RESERVED.format("status")),
        ({"le": "x"}, ERR_LABEL_RESERVED.format("le")),
        ({"1abc": "x"}, ERR_LABEL_NAME.format("1abc")),
        ({"__name": "x"}, ERR_LABEL_NAME.format("__name")),
        ({"a-b": "x"}, ERR_LABEL_NAME.format("a-b")),
        ({"app": 3}, ERR_LABEL_VALUE.format(3, "app")),
        (["app"], ERR_MAPPING.format("labels", "string value", ["app"])),
    ],
)
def test_bad_constant_labels_are_refused(labels: Any, message: str) -> None:
    """Label names are validated (Prometheus syntax, not a built-in label), values are strings."""
    with pytest.raises(ValueError, match=re.escape(message)):
        PerfMiddleware(app(), labels=labels)


def test_two_label_configurations_on_one_registry_are_refused() -> None:
    """One registry holds one set of HTTP label names: a second middleware with others fails."""
    registry = PerfRegistry()
    PerfMiddleware(app(), registry=registry, labels={"app_name": "a"})
    PerfMiddleware(app(), registry=registry, labels={"app_name": "a"})  # the same: fine
    with pytest.raises(
        ValueError, match=re.escape(ERR_SHARED_LABELS.format(("app_name",), ("app_name",)))
    ):
        PerfMiddleware(app(), registry=registry, labels={"app_name": "b"})


# -- label callables --------------------------------------------------------------------------------
async def test_label_from_sync_and_async_callables() -> None:
    """A sync and an async callable each label the request from its scope."""

    async def plan(scope: Scope) -> str:
        await asyncio.sleep(0)
        return "gold" if scope["path"].endswith("1") else "free"

    registry = PerfRegistry()
    mw = PerfMiddleware(
        app(),
        registry=registry,
        labels={"app_name": "shop"},
        label_from={"tenant": header("x-tenant"), "plan": plan},
    )
    await call(mw, "/items/1", x_tenant="acme")
    await call(mw, "/items/2", x_tenant="globex")
    await call(mw, "/items/3")
    found = {
        (s["tenant"], s["plan"], s["app_name"]) for s in samples(registry, "http_requests_total")
    }
    assert found == {("acme", "gold", "shop"), ("globex", "free", "shop"), ("", "free", "shop")}
    ttfb = samples(registry, "http_request_ttfb_seconds", suffix="_count")
    assert {s["tenant"] for s in ttfb} == {"acme", "globex", ""}
    # The in-progress gauge is updated before the app runs: constant labels only.
    gauge = samples(registry, "http_requests_in_progress")
    assert all(set(s) == {"method", "app_name"} for s in gauge)


async def test_label_from_values_are_bounded() -> None:
    """Each label keeps its first N distinct values; the rest, and over-long values, become
    __other__ and are counted as overflow."""
    registry = PerfRegistry()
    mw = PerfMiddleware(
        app(), registry=registry, label_from={"tenant": header("x-tenant")}, label_values_limit=3
    )
    for i in range(50):
        await call(mw, "/items/1", x_tenant=f"t{i}")
    await call(mw, "/items/1", x_tenant="x" * (MAX_LABEL_VALUE_LENGTH + 1))
    tenants = {s["tenant"] for s in samples(registry, "http_requests_total")}
    assert tenants == {"t0", "t1", "t2", OTHER}
    overflow = {"metric": "http_requests_total"}
    assert registry.prometheus.get_sample_value("asgi_perf_series_overflow_total", overflow) == 48


async def test_label_from_series_keys_are_capped() -> None:
    """Past the registry's series cap, new label combinations fold into __overflow__."""
    registry = PerfRegistry(max_series_per_metric=5)
    mw = PerfMiddleware(app(), registry=registry, label_from={"tenant": header("x-tenant")})
    for i in range(20):
        await call(mw, "/items/1", x_tenant=f"t{i}")
    found = samples(registry, "http_requests_total")
    assert len(found) <= 6
    assert {"route": OVERFLOW, "tenant": OVERFLOW, "method": "GET", "status": "200"} in found
    total = sum(
        sample(registry, "http_requests_total", s) or 0.0
        for s in samples(registry, "http_requests_total")
    )
    assert total == 20


async def test_hostile_label_callables_never_break_the_request() -> None:
    """A callable that raises, returns a non-string, or an async one that raises or hangs: the
    request is served, the value is __other__, the fault is counted."""

    def raises(scope: Scope) -> str:
        raise KeyError("tenant")

    def not_str(scope: Scope) -> Any:
        return 42

    async def async_raises(scope: Scope) -> str:
        raise RuntimeError("db down")

    async def hangs(scope: Scope) -> str:
        await asyncio.Event().wait()
        return "never"

    registry = PerfRegistry()
    mw = PerfMiddleware(
        app(),
        registry=registry,
        label_from={"a": raises, "b": not_str, "c": async_raises, "d": hangs},
        callback_timeout=0.01,
    )
    assert await call(mw, "/items/1") == [200]
    (found,) = samples(registry, "http_requests_total")
    assert (found["a"], found["b"], found["c"], found["d"]) == (OTHER,) * 4
    assert errors(registry, "http_labels") == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"label_from": {"tenant": "x-tenant"}}, ERR_LABEL_CALLABLE.format("x-tenant", "tenant")),
        ({"label_from": {"method": str}}, ERR_LABEL_RESERVED.format("method")),
        ({"label_from": [str]}, ERR_MAPPING.format("label_from", "callable", [str])),
        (
            {"labels": {"tenant": "a"}, "label_from": {"tenant": str}},
            ERR_LABEL_TWICE.format("tenant"),
        ),
        ({"label_from": {"t": str}, "label_values_limit": 0}, ERR_LABEL_LIMIT.format(0)),
        ({"label_values_limit": True}, ERR_LABEL_LIMIT.format(True)),
        ({"callback_timeout": 0}, ERR_TIMEOUT.format(0)),
        ({"callback_timeout": "1"}, ERR_TIMEOUT.format("1")),
        ({"skip_methods": ["GET /"]}, ERR_SKIP_METHOD.format("GET /")),
        ({"skip_methods": [None]}, ERR_SKIP_METHOD.format(None)),
        ({"on_request": [1]}, ERR_HOOK.format(1)),
        ({"disable_env": ""}, ERR_ENV_NAME.format("")),
    ],
)
def test_bad_feature_options_are_refused(options: dict[str, Any], message: str) -> None:
    """Every feature option is validated at construction with a clear message, through
    PerfMiddleware and through instrument()."""
    with pytest.raises(ValueError, match=re.escape(message)):
        PerfMiddleware(app(), **options)
    fastapi = FastAPI()
    with pytest.raises(ValueError, match=re.escape(message)):
        instrument_app(fastapi, **options)
    assert fastapi.user_middleware == []


# -- skip_methods and drop_unmatched ----------------------------------------------------------------
async def test_skip_methods_are_not_recorded() -> None:
    """skip_methods=["OPTIONS", "head"]: those requests are served but not recorded."""
    registry = PerfRegistry()
    mw = PerfMiddleware(app(), registry=registry, skip_methods=["OPTIONS", "head"])
    assert type(mw) is PerfMiddleware
    statuses = await call(mw, ("OPTIONS", "/items/1"), ("HEAD", "/items/1"), "/items/1")
    assert statuses == [200, 200, 200]
    assert {s["method"] for s in samples(registry, "http_requests_total")} == {"GET"}
    assert (
        registry.prometheus.get_sample_value("http_requests_in_progress", {"method": "OPTIONS"})
        == 0
    )


async def test_skip_methods_takes_nonstandard_methods() -> None:
    """A non-standard method (PROPFIND) can be skipped too."""
    registry = PerfRegistry()
    mw = PerfMiddleware(app(), registry=registry, skip_methods="PROPFIND")
    await mw(http_scope("/items/1", method="PROPFIND"), Receiver(), Sender())
    await mw(http_scope("/items/1", method="GET"), Receiver(), Sender())
    assert {s["method"] for s in samples(registry, "http_requests_total")} == {"GET"}


async def test_drop_unmatched() -> None:
    """drop_unmatched=True: requests no route matched (404, 405) are not recorded; an endpoint's
    own 404 and an exception still are."""

    async def missing(request: Request) -> Response:
        return PlainTextResponse("no such user", status_code=404)

    registry = PerfRegistry()
    base = Starlette(routes=[Route("/users/{uid}", missing), Route("/boom", boom)])
    mw = PerfMiddleware(base, registry=registry, drop_unmatched=True)
    statuses = await call(mw, "/nope", ("DELETE", "/users/1"), "/users/1", "/boom")
    assert statuses == [404, 405, 404, 500]
    found = {(s["route"], s["status"]) for s in samples(registry, "http_requests_total")}
    assert found == {("/users/{uid}", "404"), ("/boom", "500")}
    assert UNMATCHED not in {s["route"] for s in samples(registry, "http_exceptions_total")}
    assert (
        sample(
            registry,
            "http_exceptions_total",
            {"method": "GET", "route": "/boom", "exception": "RuntimeError"},
        )
        == 1
    )


# -- the environment switch -------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
async def test_environment_switch_passes_everything_through(
    value: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ASGI_PERF_DISABLED=1: the middleware passes the request through untouched (same scope,
    no metrics) and instrument() adds neither the middleware nor the metrics route."""
    monkeypatch.setenv(DISABLE_ENV, value)
    seen: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(dict(scope))
        await PlainTextResponse("ok")(scope, receive, send)

    registry = PerfRegistry()
    with caplog.at_level(logging.WARNING, logger="asgi_perf.http"):
        mw = PerfMiddleware(inner, registry=registry, on_request=print, label_from={"a": str})
    assert "ASGI_PERF_DISABLED is set" in caplog.text
    scope = http_scope("/x")
    await mw(scope, Receiver(), Sender())
    assert seen == [http_scope("/x")]
    assert samples(registry, "http_requests_total") == []
    assert (
        registry.prometheus.get_sample_value("http_requests_in_progress", {"method": "GET"}) is None
    )

    fastapi = FastAPI()
    fastapi.add_route("/", ok)
    instrument_app(fastapi)
    assert fastapi.user_middleware == []
    assert await call(fastapi, "/metrics", "/") == [404, 200]


async def test_environment_switch_name_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    """disable_env names another variable; None ignores the environment; an unclear value is a
    ValueError rather than a guess."""
    monkeypatch.setenv("SHOP_METRICS_OFF", "1")
    monkeypatch.setenv(DISABLE_ENV, "0")
    registry = PerfRegistry()
    await call(PerfMiddleware(app(), registry=registry, disable_env="SHOP_METRICS_OFF"), "/items/1")
    assert samples(registry, "http_requests_total") == []
    monkeypatch.setenv(DISABLE_ENV, "1")
    await call(PerfMiddleware(app(), registry=registry, disable_env=None), "/items/1")
    assert len(samples(registry, "http_requests_total")) == 1
    monkeypatch.setenv(DISABLE_ENV, "maybe")
    with pytest.raises(ValueError, match=re.escape(ERR_ENV_VALUE.format(DISABLE_ENV, "maybe"))):
        PerfMiddleware(app())


# -- hooks -----------------------------------------------------------------------------------------
async def test_on_request_hooks_sync_and_async() -> None:
    """Sync and async hooks receive the recorded request: method, route, status, duration,
    sizes, extra labels and the scope."""
    got: list[RequestInfo] = []
    async_got: list[RequestInfo] = []

    async def async_hook(info: RequestInfo) -> None:
        await asyncio.sleep(0)
        async_got.append(info)

    registry = PerfRegistry()
    mw = PerfMiddleware(
        app(),
        registry=registry,
        labels={"app_name": "shop"},
        label_from={"tenant": header("x-tenant")},
        on_request=[got.append, async_hook],
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mw), base_url="http://test"
    ) as client:
        await client.post("/echo", content=b"12345", headers={"x-tenant": "acme"})
    (info,) = got
    assert async_got == got
    assert (info.method, info.route, info.status, info.status_code) == (
        "POST",
        "/echo",
        "200",
        200,
    )
    assert (info.request_bytes, info.response_bytes) == (5, 1)
    assert info.ttfb is not None
    assert 0 < info.ttfb <= info.duration
    assert info.labels == {"app_name": "shop", "tenant": "acme"}
    assert info.scope["path"] == "/echo"
    assert info.exception is None
    assert info.recorded


async def test_hooks_see_exceptions_and_dropped_requests() -> None:
    """A hook sees a 500 with its exception class, and an unmatched request drop_unmatched left
    out (recorded=False)."""
    got: list[RequestInfo] = []
    registry = PerfRegistry()
    mw = PerfMiddleware(
        app(), registry=registry, on_request=got.append, drop_unmatched=True, group_status=True
    )
    await call(mw, "/boom", "/nope")
    assert [(i.route, i.status, i.status_code, i.exception, i.recorded) for i in got] == [
        ("/boom", "5xx", 500, "RuntimeError", True),
        (UNMATCHED, "4xx", 404, None, False),
    ]


async def test_hostile_hooks_are_contained() -> None:
    """A hook that raises, an async one that raises, one that hangs: the responses are whole,
    the faults counted, the hanging one cancelled at callback_timeout, nothing left running."""
    calls: list[str] = []

    def raises(info: RequestInfo) -> None:
        raise RuntimeError("hook bug")

    async def async_raises(info: RequestInfo) -> None:
        raise RuntimeError("async hook bug")

    async def hangs(info: RequestInfo) -> None:
        calls.append("started")
        await asyncio.Event().wait()

    def after(info: RequestInfo) -> None:
        calls.append("after")

    registry = PerfRegistry()
    mw = PerfMiddleware(
        app(),
        registry=registry,
        on_request=[raises, async_raises, hangs, after],
        callback_timeout=0.01,
    )
    before = set(asyncio.all_tasks())
    assert await call(mw, "/items/1", "/items/2") == [200, 200]
    assert calls == ["started", "after"] * 2
    assert errors(registry, "http_hooks") == 6
    assert set(asyncio.all_tasks()) == before
    assert len(samples(registry, "http_requests_total")) == 1


async def test_cancelled_request_closes_async_callables_unawaited() -> None:
    """A cancelled request task (client gone) is recorded as 499; its async label callable and
    hook are closed without being awaited (a cancelled task cannot await) and counted."""
    started = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    async def label(scope: Scope) -> str:
        return "never awaited"  # pragma: no cover - closed unawaited

    got: list[RequestInfo] = []

    async def hook(info: RequestInfo) -> None:
        got.append(info)  # pragma: no cover - closed unawaited

    sync_got: list[RequestInfo] = []
    registry = PerfRegistry()
    mw = PerfMiddleware(
        slow, registry=registry, label_from={"tenant": label}, on_request=[hook, sync_got.append]
    )
    task = asyncio.ensure_future(mw(http_scope("/x"), Receiver(), Sender()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (found,) = samples(registry, "http_requests_total")
    assert (found["status"], found["tenant"]) == ("499", OTHER)
    assert got == []
    assert [i.status for i in sync_got] == ["499"]
    assert errors(registry, "http_labels") == 1
    assert errors(registry, "http_hooks") == 1


async def test_request_hook_protocol_accepts_async_request_finished() -> None:
    """registry.request_hooks: an async request_finished is awaited (it used to be dropped
    unawaited); a failing one is counted."""
    finished: list[Any] = []

    class Hook:
        def request_started(self) -> str:
            return "state"

        async def request_finished(self, state: Any) -> None:
            await asyncio.sleep(0)
            finished.append(state)

    class Broken:
        def request_started(self) -> None:
            return None

        async def request_finished(self, state: Any) -> None:
            raise RuntimeError("broken hook")

    registry = PerfRegistry()
    registry.request_hooks.extend([Hook(), Broken()])
    mw = PerfMiddleware(app(), registry=registry)
    assert await call(mw, "/items/1", "/boom") == [200, 500]
    assert finished == ["state", "state"]
    assert errors(registry, "http") == 2


# -- multi-worker mode and remaining faults ------------------------------------------------------
async def test_extra_labels_in_multi_worker_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In multi-worker mode the constant and per-request labels are on the shared series: two
    workers' counts merge exactly per label set, and each worker's own view carries them."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    options: dict[str, Any] = {
        "labels": {"app_name": "shop"},
        "label_from": {"tenant": header("x-tenant")},
    }
    workers = [PerfRegistry(), PerfRegistry()]
    for registry in workers:
        mw = PerfMiddleware(app(), registry=registry, **options)
        await call(mw, "/items/1", "/boom", x_tenant="acme")
        await call(mw, "/items/2", x_tenant="globex")
    families: store.Families = {}
    assert store.merge_shared(families, tmp_path) == []
    values = {k: v for _, (_, _, vals) in families.items() for k, v in vals.items()}
    ok_labels = {"method": "GET", "route": "/items/{item_id}", "status": "200", "app_name": "shop"}
    for tenant, count in (("acme", 2), ("globex", 2)):
        key = tuple(sorted({**ok_labels, "tenant": tenant}.items()))
        assert values[("http_request_duration_seconds_count", key)] == count
    exception = {
        "method": "GET",
        "route": "/boom",
        "exception": "RuntimeError",
        "app_name": "shop",
        "tenant": "acme",
    }
    assert values[("http_exceptions_total", tuple(sorted(exception.items())))] == 2
    own = samples(workers[0], "http_request_ttfb_seconds", suffix="_count")
    assert {s["tenant"] for s in own} == {"acme", "globex"}
    size = samples(workers[0], "http_response_size_bytes", suffix="_count")
    assert {s["app_name"] for s in size} == {"shop"}
    assert samples(workers[0], "http_exceptions_total")[0]["tenant"] == "acme"
    gauge = samples(workers[0], "http_requests_in_progress")
    assert {s["app_name"] for s in gauge} == {"shop"}


async def test_route_getter_fault_in_the_featured_path_is_contained() -> None:
    """A route_getter returning a non-string fails the recording, not the request: counted."""
    registry = PerfRegistry()
    mw = PerfMiddleware(
        app(),
        registry=registry,
        route_getter=lambda scope: 42,  # type: ignore[arg-type,return-value]
        label_from={"tenant": header("x-tenant")},
    )
    assert await call(mw, "/items/1") == [200]
    assert errors(registry, "http") == 1


async def test_non_string_path_with_exclusions() -> None:
    """A malformed scope path (not a string) is compared as is, never stripped: no crash."""
    registry = PerfRegistry()
    mw = PerfMiddleware(PlainTextResponse("ok"), registry=registry, exclude_paths=["/x"])
    scope = http_scope("/items/1")
    scope["path"] = None
    await mw(scope, Receiver(), Sender())
    assert len(samples(registry, "http_requests_total")) == 1


async def test_request_cancelled_while_a_hook_is_awaited() -> None:
    """A request task cancelled while an async hook runs (server shutdown) stops the hook and
    propagates the cancellation: nothing is swallowed or left running."""
    in_hook = asyncio.Event()

    async def slow_hook(info: RequestInfo) -> None:
        in_hook.set()
        await asyncio.Event().wait()

    registry = PerfRegistry()
    mw = PerfMiddleware(app(), registry=registry, on_request=slow_hook, callback_timeout=60)
    task = asyncio.ensure_future(mw(http_scope("/items/1"), Receiver(), Sender()))
    await in_hook.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(samples(registry, "http_requests_total")) == 1


async def test_settle_closes_what_it_cannot_await() -> None:
    """On a cancelled request, settle() closes coroutines, cancels futures and leaves other
    awaitables alone, counting each."""

    class Bare:
        def __await__(self) -> Any:
            yield None

    registry = PerfRegistry()
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for awaitable in (future, Bare()):
        assert await settle(registry, "http_hooks", awaitable, 1.0, True) is FAILED
    assert future.cancelled()
    assert errors(registry, "http_hooks") == 2


async def test_a_message_without_a_type_reaches_the_server_untouched() -> None:
    """The featured path reads each message's type without failing on a malformed one: the
    message reaches the server's send as the app gave it, and the request is still recorded."""
    seen: list[RequestInfo] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"status": 200})  # malformed: no "type"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    registry = PerfRegistry(process_metrics=False)
    middleware = PerfMiddleware(
        app, registry=registry, route_getter=lambda scope: "/r", on_request=seen.append
    )
    sender = Sender()
    await middleware(http_scope("/r"), Receiver(), sender)
    assert sender.messages[0] == {"status": 200}
    assert [info.status_code for info in seen] == [200]
    labels = {"method": "GET", "route": "/r", "status": "200"}
    assert sample(registry, "http_requests_total", labels) == 1.0

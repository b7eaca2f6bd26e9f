"""PerfMiddleware on bare ASGI apps: what is recorded, and that the app is never changed."""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from asgi_perf import UNMATCHED, PerfMiddleware, PerfRegistry
from asgi_perf._checks import ERR_REGISTRY
from asgi_perf._types import Message, Receive, Scope, Send
from asgi_perf.http._middleware import (
    CLIENT_CLOSED_REQUEST,
    ERR_EXCLUDE_PATH,
    ERR_EXCLUDE_PATTERN,
    ERR_ROUTE_GETTER,
)
from asgi_perf.testing import sample, samples

from .._asgi import Receiver, Sender, http_scope
from .._time import FakeClock

pytestmark = pytest.mark.anyio


def route_is(label: str) -> Any:
    """A route_getter for bare apps: every request gets ``label``."""
    return lambda scope: label


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def count(registry: PerfRegistry, method: str, route: str, status: str) -> float | None:
    labels = {"method": method, "route": route, "status": status}
    return sample(registry, "http_requests_total", labels)


async def test_counts_and_times_a_request(registry: PerfRegistry) -> None:
    """One request: counted once, with duration, TTFB, response bytes and in-progress back to 0."""
    app = PerfMiddleware(hello, registry=registry, route_getter=route_is("/hello"))
    async with client(app) as c:
        r = await c.get("/hello")
    assert r.text == "hello"
    assert count(registry, "GET", "/hello", "200") == 1
    labels = {"method": "GET", "route": "/hello", "status": "200"}
    assert sample(registry, "http_request_duration_seconds", labels, suffix="_count") == 1
    short = {"method": "GET", "route": "/hello"}
    assert sample(registry, "http_request_ttfb_seconds", short, suffix="_count") == 1
    assert sample(registry, "http_response_size_bytes", short, suffix="_sum") == 5
    assert sample(registry, "http_request_size_bytes", short, suffix="_sum") == 0
    assert sample(registry, "http_requests_in_progress", {"method": "GET"}) == 0


async def test_duration_runs_to_last_body_byte_not_past_background_work(
    registry: PerfRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Duration ends at the last body byte: work after it (background tasks) is excluded."""
    clock = FakeClock(1000.0)
    monkeypatch.setattr("asgi_perf.http._middleware.perf_counter", clock)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        clock.advance(0.003)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        clock.advance(0.004)
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        clock.advance(0.005)
        await send({"type": "http.response.body", "body": b"b"})
        clock.advance(5.0)  # a background task after the response

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/r"))
    sender = Sender()
    await mw(http_scope("/r"), Receiver(), sender)
    labels = {"method": "GET", "route": "/r", "status": "200"}
    assert sample(registry, "http_request_duration_seconds", labels, suffix="_sum") == (
        pytest.approx(0.012)
    )
    assert sample(registry, "http_request_ttfb_seconds", {"method": "GET", "route": "/r"},
                  suffix="_sum") == pytest.approx(0.003)  # fmt: skip
    assert sample(registry, "http_response_size_bytes", {"method": "GET", "route": "/r"},
                  suffix="_sum") == 2  # fmt: skip
    assert sender.body == b"ab"


async def test_request_body_bytes_are_the_bytes_received(registry: PerfRegistry) -> None:
    """Request size counts the body chunks the app actually received, not Content-Length."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await hello(scope, receive, send)

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/up"))
    receiver = Receiver(
        {"type": "http.request", "body": b"x" * 100, "more_body": True},
        {"type": "http.request", "body": b"y" * 23, "more_body": False},
    )
    await mw(http_scope("/up", "POST", headers=[(b"content-length", b"5")]), receiver, Sender())
    short = {"method": "POST", "route": "/up"}
    assert sample(registry, "http_request_size_bytes", short, suffix="_sum") == 123


async def test_exception_is_500_with_duration_and_reraised(
    registry: PerfRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unhandled exception: recorded as 500 with its duration, counted by type, re-raised."""
    clock = FakeClock(1000.0)
    monkeypatch.setattr("asgi_perf.http._middleware.perf_counter", clock)

    class Boom(Exception):
        pass

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        clock.advance(0.25)
        raise Boom("no")

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/boom"))
    with pytest.raises(Boom, match="no"):
        await mw(http_scope("/boom"), Receiver(), Sender())
    labels = {"method": "GET", "route": "/boom", "status": "500"}
    assert sample(registry, "http_requests_total", labels) == 1
    assert sample(registry, "http_request_duration_seconds", labels, suffix="_sum") == 0.25
    exc = {"method": "GET", "route": "/boom", "exception": "Boom"}
    assert sample(registry, "http_exceptions_total", exc) == 1
    assert sample(registry, "http_requests_in_progress", {"method": "GET"}) == 0


async def test_exception_after_response_keeps_status_and_counts_exception(
    registry: PerfRegistry,
) -> None:
    """A background task that raises after a complete 200 leaves the 200 and counts the error."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await hello(scope, receive, send)
        raise ValueError("background failed")

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/bg"))
    with pytest.raises(ValueError, match="background failed"):
        await mw(http_scope("/bg"), Receiver(), Sender())
    assert count(registry, "GET", "/bg", "200") == 1
    exc = {"method": "GET", "route": "/bg", "exception": "ValueError"}
    assert sample(registry, "http_exceptions_total", exc) == 1


async def test_exception_mid_stream_is_500(registry: PerfRegistry) -> None:
    """A stream that breaks after the headers were sent is a failed request: 500."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("stream broke")

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/s"))
    with pytest.raises(RuntimeError):
        await mw(http_scope("/s"), Receiver(), Sender())
    assert count(registry, "GET", "/s", "500") == 1


async def test_client_disconnect_before_response_completes_is_499(registry: PerfRegistry) -> None:
    """The app saw http.disconnect and never finished the response: recorded as 499."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # the body
        message = await receive()  # the client went away
        assert message["type"] == "http.disconnect"

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/wait"))
    await mw(http_scope("/wait"), Receiver(), Sender())
    assert count(registry, "GET", "/wait", str(CLIENT_CLOSED_REQUEST)) == 1


async def test_disconnect_after_complete_response_keeps_status(registry: PerfRegistry) -> None:
    """A disconnect noticed after the last body byte does not turn a 200 into a 499."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await hello(scope, receive, send)
        await receive()
        await receive()

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/ok"))
    await mw(http_scope("/ok"), Receiver(), Sender())
    assert count(registry, "GET", "/ok", "200") == 1


async def test_cancelled_request_is_499_and_not_an_exception(registry: PerfRegistry) -> None:
    """A request task cancelled mid-way is recorded as 499, re-raised, and not counted as error."""
    started = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await asyncio.sleep(3600)

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/c"))
    task = asyncio.create_task(mw(http_scope("/c"), Receiver(), Sender()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert count(registry, "GET", "/c", "499") == 1
    assert samples(registry, "http_exceptions_total") == []
    assert sample(registry, "http_requests_in_progress", {"method": "GET"}) == 0


async def test_app_that_sends_nothing_is_500(registry: PerfRegistry) -> None:
    """An app returning without a response is what the server turns into a 500: record 500."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/none"))
    await mw(http_scope("/none"), Receiver(), Sender())
    assert count(registry, "GET", "/none", "500") == 1


async def test_in_progress_counts_concurrent_requests(registry: PerfRegistry) -> None:
    """The in-progress gauge shows requests being handled and returns to 0."""
    release = asyncio.Event()
    entered = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal entered
        entered += 1
        await release.wait()
        await hello(scope, receive, send)

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/p"))
    tasks = [
        asyncio.create_task(mw(http_scope("/p", "POST"), Receiver(), Sender())) for _ in range(3)
    ]
    while entered < 3:
        await asyncio.sleep(0)
    assert sample(registry, "http_requests_in_progress", {"method": "POST"}) == 3
    release.set()
    await asyncio.gather(*tasks)
    assert sample(registry, "http_requests_in_progress", {"method": "POST"}) == 0
    assert count(registry, "POST", "/p", "200") == 3


@pytest.mark.parametrize(
    ("method", "label"),
    [
        ("GET", "GET"),
        ("PATCH", "PATCH"),
        ("get", "OTHER"),
        ("PROPFIND", "OTHER"),
        ("X" * 5000, "OTHER"),
    ],
)
async def test_methods_are_sanitised(registry: PerfRegistry, method: str, label: str) -> None:
    """Standard methods keep their name; anything else (case included) becomes OTHER."""
    mw = PerfMiddleware(hello, registry=registry, route_getter=route_is("/m"))
    await mw(http_scope("/m", method), Receiver(), Sender())
    assert count(registry, label, "/m", "200") == 1


async def test_group_status_labels_classes(registry: PerfRegistry) -> None:
    """With group_status=True the status label is the class (2xx, 4xx)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        status = 201 if scope["path"] == "/a" else 418
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = PerfMiddleware(app, registry=registry, group_status=True, route_getter=route_is("/x"))
    for path in ("/a", "/b", "/b"):
        await mw(http_scope(path), Receiver(), Sender())
    assert count(registry, "GET", "/x", "2xx") == 1
    assert count(registry, "GET", "/x", "4xx") == 2


async def test_odd_status_codes_are_bounded(registry: PerfRegistry) -> None:
    """A status outside 100-999 (or not an int) is labelled 'other', never stringified."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 12345, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/odd"))
    await mw(http_scope("/odd"), Receiver(), Sender())
    assert count(registry, "GET", "/odd", "other") == 1


async def test_excluded_paths_and_patterns_are_not_recorded(registry: PerfRegistry) -> None:
    """Exact excluded paths and regex-excluded paths pass through unrecorded and unchanged."""
    mw = PerfMiddleware(
        hello,
        registry=registry,
        exclude_paths=["/healthz"],
        exclude_patterns=[r"^/socket\.io/", re.compile(r"^/static/")],
        route_getter=route_is("/r"),
    )
    for path in ("/healthz", "/socket.io/?EIO=4", "/static/app.js"):
        sender = Sender()
        await mw(http_scope(path), Receiver(), sender)
        assert sender.body == b"hello"
    assert samples(registry, "http_requests_total") == []
    await mw(http_scope("/healthz/deeper"), Receiver(), Sender())
    assert count(registry, "GET", "/r", "200") == 1


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
async def test_other_scopes_pass_through_untouched(registry: PerfRegistry, scope_type: str) -> None:
    """websocket and lifespan scopes reach the app with the original receive/send objects."""
    seen: list[tuple[Any, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((receive, send))

    receive, send = Receiver(), Sender()
    mw = PerfMiddleware(app, registry=registry)
    await mw({"type": scope_type}, receive, send)
    assert seen == [(receive, send)]
    assert samples(registry, "http_requests_total") == []


async def test_malformed_scope_does_not_crash(registry: PerfRegistry) -> None:
    """A scope without path or method is still served and recorded under bounded labels."""
    mw = PerfMiddleware(hello, registry=registry)
    sender = Sender()
    await mw({"type": "http"}, Receiver(), sender)
    assert sender.body == b"hello"
    assert count(registry, "OTHER", UNMATCHED, "200") == 1


async def test_response_is_byte_for_byte_unchanged(registry: PerfRegistry) -> None:
    """The messages the server receives are the very objects the app sent, in order."""
    sent: list[Message] = [
        {"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]},
        {"type": "http.response.body", "body": b"one", "more_body": True},
        {"type": "http.response.body", "body": b"two"},
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in sent:
            await send(message)

    sender = Sender()
    await PerfMiddleware(app, registry=registry)(http_scope(), Receiver(), sender)
    assert all(a is b for a, b in zip(sender.messages, sent, strict=True))


async def test_pathsend_ends_the_response(registry: PerfRegistry) -> None:
    """The http.response.pathsend extension completes the response like a last body byte."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/etc/hostname"})

    await PerfMiddleware(app, registry=registry, route_getter=route_is("/f"))(
        http_scope("/f"), Receiver(), Sender()
    )
    assert count(registry, "GET", "/f", "200") == 1


async def test_two_middlewares_share_one_registry(registry: PerfRegistry) -> None:
    """Two middlewares on one registry add into the same series (no duplicate registration)."""
    a = PerfMiddleware(hello, registry=registry, route_getter=route_is("/s"))
    b = PerfMiddleware(hello, registry=registry, route_getter=route_is("/s"))
    await a(http_scope("/s"), Receiver(), Sender())
    await b(http_scope("/s"), Receiver(), Sender())
    assert count(registry, "GET", "/s", "200") == 2
    with pytest.raises(ValueError, match="other buckets"):
        PerfMiddleware(hello, registry=registry, buckets=[0.1, 1.0])


async def test_default_registry_is_created(registry: PerfRegistry) -> None:
    """Without registry= the middleware makes its own, readable as .registry."""
    mw = PerfMiddleware(hello, route_getter=route_is("/d"))
    await mw(http_scope("/d"), Receiver(), Sender())
    assert count(mw.registry, "GET", "/d", "200") == 1


async def test_namespace_prefixes_http_metrics() -> None:
    """PerfRegistry(namespace=...) prefixes every HTTP metric name."""
    reg = PerfRegistry(namespace="shop")
    await PerfMiddleware(hello, registry=reg, route_getter=route_is("/n"))(
        http_scope("/n"), Receiver(), Sender()
    )
    value = reg.prometheus.get_sample_value(
        "shop_http_requests_total", {"method": "GET", "route": "/n", "status": "200"}
    )
    assert value == 1


async def test_custom_buckets_are_used(registry: PerfRegistry) -> None:
    """Configured buckets become the histogram's le bounds (+Inf implicit)."""
    mw = PerfMiddleware(
        hello, registry=registry, buckets=[0.5, 1, float("inf")], route_getter=route_is("/b")
    )
    await mw(http_scope("/b"), Receiver(), Sender())
    les = {s["le"] for s in samples(registry, "http_request_duration_seconds", suffix="_bucket")}
    assert les == {"0.5", "1.0", "+Inf"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exclude_paths": ["healthz"]}, ERR_EXCLUDE_PATH.format("healthz")),
        ({"exclude_paths": [3]}, ERR_EXCLUDE_PATH.format(3)),
        ({"exclude_patterns": ["("]}, ERR_EXCLUDE_PATTERN.split("{")[0]),
        ({"route_getter": "nope"}, ERR_ROUTE_GETTER.format("nope")),
        ({"registry": object()}, ERR_REGISTRY.split("{")[0]),
        ({"buckets": []}, "buckets must be"),
        ({"buckets": [1, 1]}, "buckets must be"),
        ({"buckets": ["a"]}, "buckets must be"),
        ({"buckets": [float("nan")]}, "buckets must be"),
        ({"ttfb_buckets": [3, 2]}, "buckets must be"),
        ({"ttfb_buckets": [0]}, None),
    ],
)
def test_bad_configuration_raises_value_error(kwargs: dict[str, Any], message: str | None) -> None:
    """Bad configuration fails at construction with a clear ValueError."""
    if message is None:
        PerfMiddleware(hello, **kwargs)  # a single bound is valid
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        PerfMiddleware(hello, **kwargs)


async def test_single_string_exclusions_are_accepted(registry: PerfRegistry) -> None:
    """A bare string for exclude_paths/exclude_patterns means one entry, not its characters."""
    mw = PerfMiddleware(hello, registry=registry, exclude_paths="/h", exclude_patterns="^/s/")
    await mw(http_scope("/h"), Receiver(), Sender())
    await mw(http_scope("/s/x"), Receiver(), Sender())
    assert samples(registry, "http_requests_total") == []


async def test_response_sent_after_disconnect_is_499(registry: PerfRegistry) -> None:
    """A response the app completes after the client left never reached it: 499, not 200."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await receive()  # http.disconnect
        await hello(scope, receive, send)  # the server drops these sends

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/late"))
    await mw(http_scope("/late"), Receiver(), Sender())
    assert count(registry, "GET", "/late", "499") == 1


async def test_receive_and_send_are_coroutine_functions(registry: PerfRegistry) -> None:
    """What the app gets are coroutine functions, as the server's usually are: code that asks
    (``inspect``, Starlette's ``is_async_callable``, asgiref) or schedules a send as a task
    (``asyncio.create_task``, anyio's ``start_soon``) keeps working, whatever the server's own
    ``send`` returns (a Future on some servers)."""
    seen: list[object] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(inspect.iscoroutinefunction(receive) and inspect.iscoroutinefunction(send))
        seen.append(receive.__name__)
        start = {"type": "http.response.start", "status": 200, "headers": []}
        await asyncio.create_task(send(start))  # type: ignore[arg-type]  # a coroutine, as apps assume
        await send({"type": "http.response.body", "body": b"ok"})

    loop = asyncio.get_running_loop()

    def future_send(message: Message) -> asyncio.Future[None]:
        done: asyncio.Future[None] = loop.create_future()
        loop.call_soon(done.set_result, None)
        return done

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/r"))
    await mw(http_scope("/r"), Receiver(), future_send)
    assert seen == [True, "receive"]
    assert count(registry, "GET", "/r", "200") == 1


class FailingSender(Sender):
    """A server whose ``send`` raises on one kind of message (a closed connection on a server of
    ASGI 2.4, or a message out of order)."""

    def __init__(self, fail_on: str, more_body: bool | None = None) -> None:
        super().__init__()
        self.fail_on = fail_on
        self.more_body = more_body

    async def __call__(self, message: Message) -> None:
        last = not message.get("more_body", False)
        if message["type"] == self.fail_on and self.more_body in (None, not last):
            raise OSError("connection closed")
        await super().__call__(message)


@pytest.mark.parametrize(
    ("fail_on", "more_body"),
    [("http.response.start", None), ("http.response.body", True), ("http.response.body", False)],
    ids=["start", "a chunk", "the last chunk"],
)
async def test_a_send_the_server_refuses_leaves_the_response_unfinished(
    registry: PerfRegistry, fail_on: str, more_body: bool | None
) -> None:
    """Whichever message the server refuses, the request is recorded as a 500 with the server's
    exception, never as the status the app meant to send, and the error reaches the app."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    mw = PerfMiddleware(app, registry=registry, route_getter=route_is("/r"))
    with pytest.raises(OSError, match="connection closed"):
        await mw(http_scope("/r"), Receiver(), FailingSender(fail_on, more_body))
    assert count(registry, "GET", "/r", "500") == 1
    assert count(registry, "GET", "/r", "200") is None
    labels = {"method": "GET", "route": "/r", "exception": "OSError"}
    exceptions = sample(registry, "http_exceptions_total", labels)
    assert exceptions == 1


async def test_an_unhashable_method_is_other(registry: PerfRegistry) -> None:
    """A scope whose method cannot even be looked up is served and counted as ``OTHER``."""
    sender = Sender()
    scope = {**http_scope(), "method": ["GET"]}
    await PerfMiddleware(hello, registry=registry)(scope, Receiver(), sender)
    assert sender.body == b"hello"
    assert count(registry, "OTHER", UNMATCHED, "200") == 1
    assert sample(registry, "http_requests_in_progress", {"method": "OTHER"}) == 0


def refusing_sends(fail_on_body: int) -> dict[str, Any]:
    """The shapes a server's (or an outer middleware's) ``send`` comes in, each refusing the
    ``fail_on_body``-th body message."""
    state = {"bodies": 0}

    def check(message: Message) -> None:
        if message["type"] == "http.response.body":
            state["bodies"] += 1
            if state["bodies"] == fail_on_body:
                raise OSError("connection closed")

    async def closure(message: Message) -> None:
        check(message)

    class Cycle:
        async def send(self, message: Message) -> None:
            check(message)

    class Callable:
        async def __call__(self, message: Message) -> None:
            check(message)

    async def takes_two(extra: int, message: Message) -> None:
        check(message)

    return {
        "closure": closure,
        "method": Cycle().send,
        "callable object": Callable(),
        "partial": functools.partial(takes_two, 1),
    }


@pytest.mark.parametrize("shape", ["closure", "method", "callable object", "partial"])
async def test_the_only_body_refused_is_unfinished(registry: PerfRegistry, shape: str) -> None:
    """A response's only body message is noted as the end when handed over; if the server
    refuses it, the request is still a 500, whatever shape the server's send has."""
    mw = PerfMiddleware(hello, registry=registry, route_getter=route_is("/r"))
    with pytest.raises(OSError, match="connection closed"):
        await mw(http_scope("/r"), Receiver(), refusing_sends(1)[shape])
    assert count(registry, "GET", "/r", "500") == 1
    assert count(registry, "GET", "/r", "200") is None


@pytest.mark.parametrize("shape", ["closure", "method", "callable object", "partial"])
async def test_a_message_refused_after_the_end_keeps_the_response(
    registry: PerfRegistry, shape: str
) -> None:
    """A message sent after the last (an app's protocol error) that the server refuses does not
    undo the response the client already has: its status stays, the exception is counted."""

    async def twice(scope: Scope, receive: Receive, send: Send) -> None:
        await hello(scope, receive, send)
        await send({"type": "http.response.body", "body": b"again"})

    mw = PerfMiddleware(twice, registry=registry, route_getter=route_is("/r"))
    with pytest.raises(OSError, match="connection closed"):
        await mw(http_scope("/r"), Receiver(), refusing_sends(2)[shape])
    assert count(registry, "GET", "/r", "200") == 1
    labels = {"method": "GET", "route": "/r", "exception": "OSError"}
    assert sample(registry, "http_exceptions_total", labels) == 1


async def test_an_error_after_the_response_keeps_it(registry: PerfRegistry) -> None:
    """An app that fails after its response went out (a background task) keeps its status: the
    error did not come out of the server's send."""

    async def then_fail(scope: Scope, receive: Receive, send: Send) -> None:
        await hello(scope, receive, send)
        raise OSError("background task")

    mw = PerfMiddleware(then_fail, registry=registry, route_getter=route_is("/r"))
    with pytest.raises(OSError, match="background task"):
        await mw(http_scope("/r"), Receiver(), Sender())
    assert count(registry, "GET", "/r", "200") == 1


async def test_sizes_are_what_went_out_behind_a_middleware_that_rewrites_the_body() -> None:
    """An outer middleware that rewrites the message in place (Starlette's GZipMiddleware, added
    after PerfMiddleware) : the response size is the compressed size the server sent, read once
    the server has taken each message."""
    registry = PerfRegistry(exemplars=False)
    app = Starlette(routes=[Route("/big", lambda request: PlainTextResponse("z" * 100_000))])
    app.add_middleware(PerfMiddleware, registry=registry)
    app.add_middleware(GZipMiddleware, minimum_size=100)
    async with client(app) as c:
        response = await c.get("/big", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    labels = {"method": "GET", "route": "/big"}
    sent = sample(registry, "http_response_size_bytes", labels, suffix="_sum")
    assert sent == response.num_bytes_downloaded < 100_000


async def test_a_sub_app_built_at_its_first_request_records_it_once() -> None:
    """An app instrumented with the registry of the app it is mounted in: Starlette builds the
    sub-app's middleware at the first request that reaches it, while the outer one is already
    recording that request. Every request, the first included, is counted once."""
    registry = PerfRegistry(exemplars=False)
    hello_route = Route("/hello", lambda request: PlainTextResponse("hi"))
    sub = Starlette(
        routes=[hello_route], middleware=[Middleware(PerfMiddleware, registry=registry)]
    )
    app = Starlette(
        routes=[Mount("/sub", sub)], middleware=[Middleware(PerfMiddleware, registry=registry)]
    )
    async with client(app) as c:
        await c.get("/sub/hello")
        assert count(registry, "GET", "/sub/hello", "200") == 1
        await c.get("/sub/hello")
    assert count(registry, "GET", "/sub/hello", "200") == 2


async def test_a_client_gone_while_the_only_body_drains_is_499(registry: PerfRegistry) -> None:
    """The server still delivering the response's only body message when the client leaves (a
    slow drain): the response never reached the client, the request is a 499."""
    gone = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        listening = asyncio.ensure_future(listen())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 1000})
        await listening

    first = True

    async def receive() -> Message:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b""}
        await asyncio.sleep(0.01)
        gone.set()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            await gone.wait()  # still draining when the client leaves; then dropped silently

    await PerfMiddleware(app, registry=registry, route_getter=route_is("/r"))(
        http_scope("/r"), receive, send
    )
    assert count(registry, "GET", "/r", str(CLIENT_CLOSED_REQUEST)) == 1

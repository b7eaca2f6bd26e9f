"""metrics_app: negotiation, gzip, HEAD, auth, allow-list, lifespan, off-loop rendering, promtool."""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import re
import subprocess
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.routing import Route

from asgi_perf import PerfMiddleware, PerfRegistry, instrument, metrics_app
from asgi_perf.export._exposition import (
    ERR_ALLOW,
    ERR_ALLOW_EMPTY,
    ERR_BASIC,
    ERR_REGISTRY,
    ERR_TOKEN,
    GZIP_MIN_SIZE,
    OPS_ENDPOINTS,
    WARN_OPEN_OPERATIONS,
)
from asgi_perf.http._instrument import ERR_METRICS_PATH, ERR_OPERATIONS_OPTION
from asgi_perf.testing import sample, scrape

from .._asgi import Receiver, Sender, http_scope
from .._ops import exact

pytestmark = pytest.mark.anyio

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def filled(registry: PerfRegistry, n: int = 3) -> PerfRegistry:
    counter = Counter("demo_things", "Things.", ["kind"], registry=registry.prometheus)
    for i in range(n):
        counter.labels(str(i)).inc(i + 1)
    return registry


async def test_text_format_by_default(registry: PerfRegistry) -> None:
    """Without an Accept header the Prometheus text format is served, uncompressed, no-store."""
    response = await scrape(metrics_app(filled(registry)))
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'demo_things_total{kind="2"} 3.0' in response.text
    assert response.headers["cache-control"] == "no-store"
    assert "content-encoding" not in response.headers


async def test_openmetrics_when_asked(registry: PerfRegistry) -> None:
    """Accept: application/openmetrics-text negotiates OpenMetrics (ends with # EOF)."""
    response = await scrape(
        metrics_app(filled(registry)),
        headers=[("accept", "application/openmetrics-text; version=1.0.0")],
    )
    assert response.headers["content-type"].startswith(OPENMETRICS)
    assert response.text.endswith("# EOF\n")


async def test_gzip_when_accepted_and_worth_it(registry: PerfRegistry) -> None:
    """Large bodies are gzipped for clients that accept gzip; tiny ones are not."""
    big = filled(registry, 50)
    response = await scrape(metrics_app(big), headers=[("accept-encoding", "gzip, br")])
    assert response.headers["content-encoding"] == "gzip"
    assert "demo_things_total" in gzip.decompress(response.body).decode()
    assert response.headers["vary"] == "Accept, Accept-Encoding"
    small = await scrape(metrics_app(CollectorRegistry()), headers=[("accept-encoding", "gzip")])
    assert len(small.body) < GZIP_MIN_SIZE
    assert "content-encoding" not in small.headers
    plain = await scrape(metrics_app(big, gzip=False), headers=[("accept-encoding", "gzip")])
    assert "content-encoding" not in plain.headers


async def test_head_has_headers_and_no_body() -> None:
    """HEAD returns the GET headers (with the real Content-Length) and an empty body."""
    # Without the process collectors: memory and CPU move between the two scrapes.
    app = metrics_app(filled(PerfRegistry(process_metrics=False)))
    get = await scrape(app)
    head = await scrape(app, method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-length"] == str(len(get.body))


async def test_other_methods_get_405(registry: PerfRegistry) -> None:
    """Anything but GET/HEAD is 405 with an Allow header."""
    response = await scrape(metrics_app(registry), method="POST")
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_bearer_token(registry: PerfRegistry) -> None:
    """With token=, only 'Authorization: Bearer <token>' reads metrics; others get 401."""
    app = metrics_app(registry, token="s3cret")
    assert (await scrape(app)).status == 401
    wrong = await scrape(app, headers=[("authorization", "Bearer nope")])
    assert wrong.status == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert (await scrape(app, headers=[("authorization", "Bearer s3cret")])).status == 200


async def test_basic_auth(registry: PerfRegistry) -> None:
    """With basic_auth=, the right user:password reads metrics; wrong or garbled gets 401."""
    app = metrics_app(registry, basic_auth=("prom", "pw"))

    def basic(raw: str) -> list[tuple[str, str]]:
        return [("authorization", "Basic " + base64.b64encode(raw.encode()).decode())]

    assert (await scrape(app, headers=basic("prom:pw"))).status == 200
    assert (await scrape(app, headers=[("authorization", "basic cHJvbTpwdw==")])).status == 200
    assert (await scrape(app, headers=basic("prom:nope"))).status == 401
    assert (await scrape(app, headers=[("authorization", "Basic !!!")])).status == 401
    denied = await scrape(app, headers=[("authorization", "Bearer pw")])
    assert denied.status == 401
    assert denied.headers["www-authenticate"] == 'Basic realm="metrics"'


async def test_token_or_basic_either_accepted(registry: PerfRegistry) -> None:
    """With both configured, either credential is accepted."""
    app = metrics_app(registry, token="t", basic_auth=("u", "p"))
    assert (await scrape(app, headers=[("authorization", "Bearer t")])).status == 200
    creds = base64.b64encode(b"u:p").decode()
    assert (await scrape(app, headers=[("authorization", f"Basic {creds}")])).status == 200


async def test_allow_list(registry: PerfRegistry) -> None:
    """Only clients in the allowed networks read metrics; others (or unknown clients) get 403."""
    app = metrics_app(registry, allow=["10.0.0.0/8", "127.0.0.1"])
    assert (await scrape(app, client=("10.1.2.3", 1))).status == 200
    assert (await scrape(app, client=("127.0.0.1", 1))).status == 200
    assert (await scrape(app, client=("192.168.1.1", 1))).status == 403
    assert (await scrape(app, client=("not-an-ip", 1))).status == 403
    sender = Sender()
    await app(http_scope("/metrics", client=None), Receiver(), sender)
    assert sender.status == 403


async def test_allow_list_and_token_both_apply(registry: PerfRegistry) -> None:
    """An allowed client still needs the token; a disallowed one is refused before auth."""
    app = metrics_app(registry, allow="127.0.0.0/8", token="t")
    assert (await scrape(app)).status == 401
    assert (await scrape(app, headers=[("authorization", "Bearer t")])).status == 200
    assert (await scrape(app, client=("8.8.8.8", 1))).status == 403


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"token": ""}, ERR_TOKEN),
        ({"token": 5}, ERR_TOKEN),
        ({"basic_auth": ("u",)}, ERR_BASIC),
        ({"basic_auth": ("u", "")}, ERR_BASIC),
        ({"basic_auth": "u:p"}, ERR_BASIC),
        ({"allow": ["10.0.0.0/33"]}, ERR_ALLOW.split("{")[0]),
        ({"allow": ["nope"]}, ERR_ALLOW.split("{")[0]),
        ({"allow": []}, ERR_ALLOW_EMPTY),
        ({"allow": ()}, ERR_ALLOW_EMPTY),
        ({"allow": iter(())}, ERR_ALLOW_EMPTY),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], message: str) -> None:
    """Bad protection settings raise ValueError at construction."""
    with pytest.raises(ValueError, match=re.escape(message)):
        metrics_app(PerfRegistry(), **kwargs)


def test_needs_a_registry() -> None:
    """metrics_app rejects anything but a PerfRegistry or a CollectorRegistry."""
    with pytest.raises(ValueError, match=re.escape(ERR_REGISTRY.split("{")[0])):
        metrics_app(object())  # type: ignore[arg-type]


async def test_plain_collector_registry_is_accepted() -> None:
    """A bare prometheus_client CollectorRegistry can be served too."""
    reg = CollectorRegistry()
    Counter("plain_total", "Plain.", registry=reg).inc()
    assert "plain_total 1.0" in (await scrape(metrics_app(reg))).text


async def test_lifespan_is_acknowledged(registry: PerfRegistry) -> None:
    """Run as an app of its own, metrics_app completes the lifespan protocol."""
    sender = Sender()
    receiver = Receiver({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"})
    await metrics_app(registry)({"type": "lifespan"}, receiver, sender)
    assert [m["type"] for m in sender.messages] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_websocket_is_closed(registry: PerfRegistry) -> None:
    """A websocket connection to the metrics app is closed (policy violation), not served."""
    sender = Sender()
    await metrics_app(registry)({"type": "websocket"}, Receiver(), sender)
    assert sender.messages == [{"type": "websocket.close", "code": 1008}]
    await metrics_app(registry)({"type": "other"}, Receiver(), Sender())


async def test_rendering_does_not_block_the_event_loop() -> None:
    """A 20k-sample registry is rendered in a thread: other tasks run while it renders."""
    registry = PerfRegistry()
    counter = Counter("wide", "Wide.", ["i"], registry=registry.prometheus)
    for i in range(20_000):
        counter.labels(str(i)).inc()
    ticks = 0
    stop = False

    async def ticker() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    response = await scrape(metrics_app(registry))
    during = ticks - before
    stop = True
    await task
    assert response.text.count("wide_total{") == 20_000
    assert during > 1

    # The inline mode exists for single-threaded hosts; there nothing else runs meanwhile.
    ticks, stop = 0, False
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await scrape(metrics_app(registry, render_in_thread=False))
    inline = ticks - before
    stop = True
    await task
    assert inline == 0


async def test_instrument_wires_middleware_and_route() -> None:
    """instrument(app): requests are recorded and /metrics is served without a redirect."""
    from starlette.responses import PlainTextResponse

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("home")

    app = Starlette(routes=[Route("/", home)])
    registry = instrument(app, metrics_options={"token": "t"}, exclude_paths=["/metrics"])
    assert isinstance(registry, PerfRegistry)
    assert (await scrape(app, "/")).status == 200
    unauth = await scrape(app, "/metrics")
    assert unauth.status == 401
    response = await scrape(app, "/metrics", headers=[("authorization", "Bearer t")])
    assert response.status == 200
    assert 'http_requests_total{method="GET",route="/",status="200"} 1.0' in response.text


def test_instrument_validates_eagerly() -> None:
    """instrument() raises for a non-Starlette app, a bad path or bad middleware options now,
    not at the first request."""
    with pytest.raises(ValueError, match="Starlette or FastAPI"):
        instrument(object())
    with pytest.raises(ValueError, match="metrics_path"):
        instrument(Starlette(), metrics_path="metrics")
    with pytest.raises(ValueError, match="exclude_paths"):
        instrument(Starlette(), exclude_paths=["x"])


@pytest.mark.parametrize("path", ["/summary", "/ops/history/", "/alerts", "/app/dashboard"])
@pytest.mark.parametrize("operations", [True, False])
def test_instrument_rejects_a_metrics_path_named_like_an_operations_endpoint(
    path: str, operations: bool
) -> None:
    """A metrics_path ending in summary/history/alerts/dashboard is refused: the metrics app
    would answer it with that endpoint instead of the metrics."""
    with pytest.raises(ValueError, match=exact(ERR_METRICS_PATH.format(path))):
        instrument(Starlette(), metrics_path=path, operations=operations)


async def test_promtool_accepts_a_real_scrape(promtool: str) -> None:
    """`promtool check metrics` passes, with no warnings, on a scrape with every HTTP metric."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("x")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hi"})

    registry = PerfRegistry(namespace="svc")
    mw = PerfMiddleware(app, registry=registry)
    await mw(http_scope("/ok", "POST"), Receiver(), Sender())
    with pytest.raises(RuntimeError):
        await mw(http_scope("/boom"), Receiver(), Sender())
    registry.report_error("test", ValueError("counted"))
    body = (await scrape(metrics_app(registry))).body
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert output.strip() == "", output
    assert b"svc_http_request_duration_seconds_bucket" in body
    assert b"svc_http_exceptions_total" in body


async def test_operations_endpoints_are_off_by_default(registry: PerfRegistry) -> None:
    """metrics_app() serves the metrics only: every operations path is a 404 (no JSON, no page)
    until operations=True."""
    app = metrics_app(registry, render_in_thread=False)
    for endpoint in sorted(OPS_ENDPOINTS):
        response = await scrape(app, f"/metrics/{endpoint}")
        assert response.status == 404, endpoint
        assert response.body == b"Not Found\n"
    assert (await scrape(app, "/metrics/summary", method="HEAD")).body == b""
    on = metrics_app(registry, render_in_thread=False, operations=True, allow=["127.0.0.1"])
    assert (await scrape(on, "/metrics/summary")).status == 200


async def test_instrument_routes_no_operations_by_default() -> None:
    """instrument(app) adds /metrics only; the operations paths are not routed (404)."""
    app = Starlette()
    instrument(app)
    for endpoint in ("summary", "history", "alerts", "dashboard"):
        assert (await scrape(app, f"/metrics/{endpoint}")).status == 404
    assert (await scrape(app, "/metrics")).status == 200


@pytest.mark.parametrize(
    ("kwargs", "warnings"),
    [
        ({"operations": True}, 1),
        ({"operations": True, "token": "t"}, 0),
        ({"operations": True, "basic_auth": ("u", "p")}, 0),
        ({"operations": True, "allow": ["127.0.0.1"]}, 0),
        ({}, 0),
    ],
)
async def test_open_operations_warn_once_at_construction(
    kwargs: dict[str, Any], warnings: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Operations on without token, basic_auth or allow log one warning when the app is built,
    none per request; protected (or off), nothing."""
    with caplog.at_level(logging.WARNING, logger="asgi_perf.export"):
        app = metrics_app(PerfRegistry(), render_in_thread=False, **kwargs)
        for _ in range(3):
            await scrape(app, "/metrics/summary")
            await scrape(app, "/metrics")
    found = [r.getMessage() for r in caplog.records if r.name == "asgi_perf.export"]
    assert found == [WARN_OPEN_OPERATIONS] * warnings


def test_instrument_with_open_operations_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """instrument(app, operations=True) with no protection logs the warning exactly once."""
    with caplog.at_level(logging.WARNING, logger="asgi_perf.export"):
        instrument(Starlette(), operations=True)
    assert [r.getMessage() for r in caplog.records if r.name == "asgi_perf.export"] == [
        WARN_OPEN_OPERATIONS
    ]


def test_instrument_takes_operations_itself() -> None:
    """operations= belongs to instrument() (it decides the routes), not to metrics_options."""
    with pytest.raises(ValueError, match=re.escape(ERR_OPERATIONS_OPTION)):
        instrument(Starlette(), metrics_options={"operations": True})


async def test_every_response_says_nosniff(registry: PerfRegistry) -> None:
    """Metrics, denials and 404s all carry X-Content-Type-Options: nosniff."""
    app = metrics_app(registry, render_in_thread=False, token="t")
    for path, headers in (("/metrics", [("Authorization", "Bearer t")]), ("/metrics", [])):
        response = await scrape(app, path, headers=headers)
        assert response.headers["x-content-type-options"] == "nosniff"


class _RaisingCollector:
    """A scrape-time collector that always raises, as a broken integration would."""

    def collect(self) -> Any:
        raise RuntimeError("collector is broken")


@pytest.mark.parametrize(
    "accept", ["", "application/openmetrics-text; version=1.0.0; charset=utf-8"]
)
async def test_a_raising_collector_leaves_the_rest_of_the_scrape(
    registry: PerfRegistry, accept: str
) -> None:
    """/metrics answers 200 with every other family while one collector raises (text and
    OpenMetrics, fast renderer and the prometheus_client rendering it falls back to), and
    /metrics/summary keeps answering; each failure is counted under 'collect'."""
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    filled(registry)
    registry.register(_RaisingCollector())
    app = metrics_app(registry, render_in_thread=False, operations=True, allow=["127.0.0.1"])
    response = await scrape(app, headers=[("accept", accept)] if accept else [])
    assert response.status == 200
    assert "demo_things_total" in response.text
    fallback = (om_latest if accept else generate_latest)(registry.prometheus).decode()
    assert "demo_things_total" in fallback
    summary = await scrape(app, "/metrics/summary")
    assert summary.status == 200
    errors = {"component": "collect"}
    value = sample(registry, "asgi_perf_instrumentation_errors_total", errors)
    assert value is not None
    assert value >= 3

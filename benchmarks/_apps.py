"""The apps the HTTP benchmarks compare: one Starlette app, bare or behind each contender.

Importable by uvicorn as factories: ``benchmarks._apps:bare`` etc., with ``BENCH_ROUTES`` (route
count) in the environment; ``benchmarks._apps:served`` builds the server-bound benchmark's app
(:func:`server_app`) behind the contender named in ``BENCH_CONTENDER``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from time import perf_counter
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route


async def endpoint(request: Request) -> Response:
    return PlainTextResponse("ok")


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 100

    return StreamingResponse(chunks(), media_type="text/plain")


def base_app(routes: int | None = None) -> Starlette:
    n = routes if routes is not None else int(os.environ.get("BENCH_ROUTES", "10"))
    # The benchmarked route is the last one: a router that re-matches pays for every route.
    table = [Route(f"/r{i}/{{item_id}}", endpoint) for i in range(n - 2)]
    table += [Route("/stream", stream), Route("/items/{item_id}", endpoint)]
    return Starlette(routes=table)


# -- the server-bound benchmark's app: what a small JSON API looks like -------------------------

#: Resources of the JSON API, in routing order; ``items`` is the one the load generator hits.
RESOURCES = (
    "users", "accounts", "items", "orders", "products", "carts", "invoices", "payments",
    "shipments", "reviews", "categories", "comments",
)  # fmt: skip


async def _listing(request: Request) -> Response:
    kind = request.url.path.strip("/").split("/")[0]
    return JSONResponse({"kind": kind, "page": 1, "results": [{"id": i} for i in range(5)]})


async def _detail(request: Request) -> Response:
    ident = request.path_params["id"]
    return JSONResponse(
        {
            "id": ident,
            "name": f"item {ident}",
            "price": {"amount": ident % 97 + 0.99, "currency": "EUR"},
            "tags": ["new", "sale"] if ident % 2 else ["classic"],
            "in_stock": ident % 3 != 0,
        }
    )


async def _history(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["id"], "events": []})


async def _search(request: Request) -> Response:
    return JSONResponse({"query": request.query_params.get("q", ""), "results": []})


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _export(request: Request) -> Response:
    async def lines() -> AsyncIterator[bytes]:
        for i in range(10):
            yield json.dumps({"line": i, "payload": "x" * 80}).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def server_app() -> Starlette:
    """54 routes: per resource a listing, a search, a detail (``/{kind}/{id:int}``) and a history,
    plus health, version, config, the root, a POST and a 10-chunk ``/export`` stream."""
    table = []
    for kind in RESOURCES:
        table += [
            Route(f"/{kind}", _listing),
            Route(f"/{kind}/search", _search),
            Route(f"/{kind}/{{id:int}}", _detail),
            Route(f"/{kind}/{{id:int}}/history", _history),
        ]
    table += [
        Route("/", _health),
        Route("/healthz", _health),
        Route("/version", _health),
        Route("/config", _health),
        Route("/orders", _health, methods=["POST"]),
        Route("/export", _export),
    ]
    return Starlette(routes=table)


class MinimalMiddleware:
    """What one would write by hand: one prometheus_client Histogram labelled by method, route
    template (from ``scope["route"]``) and status, children cached by label tuple. Duration only
    (to the app's return), no TTFB, sizes, in-progress or exceptions."""

    def __init__(self, app: Any) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        self.app = app
        self.histogram = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration",
            ["method", "route", "status"],
            registry=CollectorRegistry(),
        )
        self.children: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            key = (scope["method"], route.path if route is not None else "__unmatched__", status)
            child = self.children.get(key)
            if child is None:
                child = self.children[key] = self.histogram.labels(*key)
            child.observe(perf_counter() - start)


class MinimalFullMiddleware:
    """The hand-written minimal grown to record what asgi-perf records by default: duration to
    the last body byte, TTFB, request and response body sizes, requests in progress, exceptions
    and client disconnects (499), with prometheus_client metrics and children cached by label
    tuple. What one would write by hand to compare like with like."""

    def __init__(self, app: Any) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

        self.app = app
        registry = CollectorRegistry()
        labels = ["method", "route", "status"]
        self.duration = Histogram("http_request_duration_seconds", "d", labels, registry=registry)
        self.ttfb = Histogram(
            "http_request_ttfb_seconds", "t", ["method", "route"], registry=registry
        )
        self.req_size = Summary(
            "http_request_size_bytes", "q", ["method", "route"], registry=registry
        )
        self.resp_size = Summary(
            "http_response_size_bytes", "r", ["method", "route"], registry=registry
        )
        self.in_progress = Gauge("http_requests_in_progress", "i", ["method"], registry=registry)
        self.exceptions = Counter(
            "http_exceptions", "e", ["method", "route", "exception"], registry=registry
        )
        self.children: dict[Any, Any] = {}

    def child(self, metric: Any, *key: Any) -> Any:
        found = self.children.get((id(metric), key))
        if found is None:
            found = self.children[(id(metric), key)] = metric.labels(*key)
        return found

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        gauge = self.child(self.in_progress, method)
        gauge.inc()
        start = perf_counter()
        status = 500
        started = ended = 0.0
        received = sent = 0
        disconnected = False

        async def receive_wrapper() -> Any:
            nonlocal received, disconnected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            elif message["type"] == "http.disconnect" and not ended:
                disconnected = True
            return message

        async def send_wrapper(message: Any) -> None:
            nonlocal status, started, ended, sent
            await send(message)
            if message["type"] == "http.response.start":
                status = message["status"]
                started = perf_counter()
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
                if not message.get("more_body", False):
                    ended = perf_counter()

        error: BaseException | None = None
        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except BaseException as exc:
            error = exc
            raise
        finally:
            gauge.dec()
            route = scope.get("route")
            path = route.path if route is not None else "__unmatched__"
            if disconnected:
                status = 499
            elif error is not None and not ended:
                status = 500
            self.child(self.duration, method, path, status).observe(
                (ended or perf_counter()) - start
            )
            if started:
                self.child(self.ttfb, method, path).observe(started - start)
            self.child(self.req_size, method, path).observe(received)
            self.child(self.resp_size, method, path).observe(sent)
            if error is not None:
                self.child(self.exceptions, method, path, type(error).__name__).inc()


# -- the contenders: each takes a Starlette app and returns it instrumented ---------------------


def with_asgi_perf(app: Starlette) -> Any:
    from asgi_perf import PerfMiddleware, PerfRegistry

    app.add_middleware(PerfMiddleware, registry=PerfRegistry())
    return app


def with_asgi_perf_constant_labels(app: Starlette) -> Any:
    """asgi-perf with the options decided at construction: constant labels, skip_methods."""
    from asgi_perf import PerfMiddleware, PerfRegistry

    app.add_middleware(
        PerfMiddleware,
        registry=PerfRegistry(),
        labels={"app_name": "bench"},
        skip_methods=["OPTIONS"],
    )
    return app


def with_asgi_perf_featured(app: Starlette) -> Any:
    """asgi-perf with the per-request features: a label_from callable and a sync hook."""
    from asgi_perf import PerfMiddleware, PerfRegistry

    def scheme(scope: Any) -> str:
        return str(scope["scheme"])

    def hook(info: Any) -> None:
        return None

    app.add_middleware(
        PerfMiddleware, registry=PerfRegistry(), label_from={"scheme": scheme}, on_request=hook
    )
    return app


def with_asgi_perf_pfi_compat(app: Starlette) -> Any:
    """asgi-perf exposing the instrumentator's names: its high-resolution histogram is the one
    knob that costs on the request path."""
    from asgi_perf import PerfMiddleware, PerfRegistry

    registry = PerfRegistry(compat="prometheus-fastapi-instrumentator")
    app.add_middleware(PerfMiddleware, registry=registry)
    return app


def with_asgi_perf_multiworker(app: Starlette) -> Any:
    """asgi-perf in multi-worker mode: counters and histograms in a shared-memory file."""
    import atexit
    import shutil
    import tempfile

    from asgi_perf import PerfMiddleware, PerfRegistry
    from asgi_perf.export import enable_multiprocess

    directory = tempfile.mkdtemp(prefix="asgi-perf-bench-")
    atexit.register(shutil.rmtree, directory, True)
    registry = PerfRegistry()
    # The publisher (gauges) is left idle: what is measured is the request path.
    enable_multiprocess(registry, directory, interval=3600)
    app.add_middleware(PerfMiddleware, registry=registry)
    return app


def with_asgi_perf_before(app: Starlette) -> Any:
    """An earlier asgi-perf for a before/after comparison in one run.

    ``BENCH_BEFORE_PATH`` names a directory holding that version's package renamed
    ``asgi_perf_before`` (``git archive <ref> asgi_perf | tar -x`` then rename: its imports are
    relative).
    """
    import sys

    sys.path.insert(0, os.environ["BENCH_BEFORE_PATH"])
    from asgi_perf_before import PerfMiddleware, PerfRegistry

    app.add_middleware(PerfMiddleware, registry=PerfRegistry())
    return app


def with_minimal(app: Starlette) -> Any:
    app.add_middleware(MinimalMiddleware)
    return app


def with_minimal_full(app: Starlette) -> Any:
    app.add_middleware(MinimalFullMiddleware)
    return app


def with_instrumentator(app: Starlette) -> Any:
    from prometheus_client import CollectorRegistry
    from prometheus_fastapi_instrumentator import Instrumentator

    Instrumentator(registry=CollectorRegistry()).instrument(app)
    return app


def with_starlette_exporter(app: Starlette) -> Any:
    from starlette_exporter import PrometheusMiddleware

    app.add_middleware(PrometheusMiddleware, group_paths=True)
    return app


_otel_provider: Any = None


def with_opentelemetry(app: Starlette) -> Any:
    """OpenTelemetry's ASGI middleware with its Prometheus reader (metrics), no-op tracer."""
    global _otel_provider  # noqa: PLW0603 - one MeterProvider per process, as OTel expects
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.metrics import MeterProvider

    if _otel_provider is None:
        _otel_provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    app.add_middleware(OpenTelemetryMiddleware, meter_provider=_otel_provider)
    return app


def _in_span(app: Any) -> Any:
    """``app`` served inside one recording, sampled OpenTelemetry span (attached per request and
    never ended): what an app traced by OpenTelemetry's middleware looks like to asgi-perf, minus
    the cost of creating the span."""
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider

    span = TracerProvider().get_tracer("bench").start_span("request")
    traced = trace.set_span_in_context(span)

    async def in_span(scope: Any, receive: Any, send: Any) -> None:
        token = context.attach(traced)
        try:
            await app(scope, receive, send)
        finally:
            context.detach(token)

    return in_span


def bare_in_span(routes: int | None = None) -> Any:
    return _in_span(bare(routes))


def asgi_perf_no_exemplars(routes: int | None = None) -> Any:
    """exemplars=False: the code path of an install without opentelemetry-api."""
    from asgi_perf import PerfMiddleware, PerfRegistry

    app = base_app(routes)
    app.add_middleware(PerfMiddleware, registry=PerfRegistry(exemplars=False))
    return app


def asgi_perf_in_span(routes: int | None = None) -> Any:
    return _in_span(asgi_perf(routes))


#: Every contender by name; ``bare`` returns the app as it is.
INSTRUMENT: dict[str, Callable[[Starlette], Any]] = {
    "bare": lambda app: app,
    "asgi-perf before": with_asgi_perf_before,
    "asgi-perf": with_asgi_perf,
    "asgi-perf multi-worker": with_asgi_perf_multiworker,
    "asgi-perf constant labels": with_asgi_perf_constant_labels,
    "asgi-perf label_from+hook": with_asgi_perf_featured,
    "asgi-perf pfi-compat": with_asgi_perf_pfi_compat,
    "minimal": with_minimal,
    "minimal full-set": with_minimal_full,
    "prometheus-fastapi-instrumentator": with_instrumentator,
    "starlette-exporter": with_starlette_exporter,
    "opentelemetry-asgi": with_opentelemetry,
}


def _on_base(name: str, attribute: str) -> Callable[..., Any]:
    """A factory ``routes -> app`` for :func:`base_app` behind ``name``; ``attribute`` is the name
    it is bound to here, so uvicorn can import it by its ``__name__``."""

    def make(routes: int | None = None) -> Any:
        return INSTRUMENT[name](base_app(routes))

    make.__name__ = make.__qualname__ = attribute
    return make


bare = _on_base("bare", "bare")
asgi_perf = _on_base("asgi-perf", "asgi_perf")
asgi_perf_multiworker = _on_base("asgi-perf multi-worker", "asgi_perf_multiworker")
asgi_perf_before = _on_base("asgi-perf before", "asgi_perf_before")
asgi_perf_constant_labels = _on_base("asgi-perf constant labels", "asgi_perf_constant_labels")
asgi_perf_featured = _on_base("asgi-perf label_from+hook", "asgi_perf_featured")
asgi_perf_pfi_compat = _on_base("asgi-perf pfi-compat", "asgi_perf_pfi_compat")
minimal = _on_base("minimal", "minimal")
minimal_full = _on_base("minimal full-set", "minimal_full")
instrumentator = _on_base("prometheus-fastapi-instrumentator", "instrumentator")
starlette_exporter = _on_base("starlette-exporter", "starlette_exporter")
opentelemetry = _on_base("opentelemetry-asgi", "opentelemetry")

CONTENDERS: dict[str, Callable[..., Any]] = {
    "bare": bare,
    "asgi-perf": asgi_perf,
    "asgi-perf multi-worker": asgi_perf_multiworker,
    "asgi-perf constant labels": asgi_perf_constant_labels,
    "asgi-perf label_from+hook": asgi_perf_featured,
    "asgi-perf pfi-compat": asgi_perf_pfi_compat,
    "minimal": minimal,
    "minimal full-set": minimal_full,
    "prometheus-fastapi-instrumentator": instrumentator,
    "starlette-exporter": starlette_exporter,
    "opentelemetry-asgi": opentelemetry,
}
if os.environ.get("BENCH_BEFORE_PATH"):
    CONTENDERS = {"bare": bare, "asgi-perf before": asgi_perf_before, **CONTENDERS}

#: ``bench_http.py --exemplars``: the cost of exemplars (opentelemetry-api installed).
EXEMPLAR_CONTENDERS: dict[str, Callable[..., Any]] = {
    "bare": bare,
    "asgi-perf exemplars off": asgi_perf_no_exemplars,
    "asgi-perf no span": asgi_perf,
    "bare in span": bare_in_span,
    "asgi-perf in span": asgi_perf_in_span,
}


def served() -> Any:
    """uvicorn factory for the server-bound benchmark: :func:`server_app` behind
    ``BENCH_CONTENDER``; with ``BENCH_GC_STATS`` set, the collector's passes are timed."""
    if os.environ.get("BENCH_GC_STATS"):
        _time_gc(os.environ["BENCH_GC_STATS"])
    return INSTRUMENT[os.environ.get("BENCH_CONTENDER", "bare")](server_app())


def _time_gc(path: str) -> None:
    """Time every collector pass (gc.callbacks); SIGUSR1 writes the totals so far to ``path``."""
    import gc
    import signal
    import time

    clock = time.thread_time  # CPU, not wall: a pass preempted by another process is not longer
    totals = {"passes": [0, 0, 0], "seconds": 0.0, "collected": 0, "seq": 0}
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = clock()
            return
        totals["seconds"] += clock() - started[0]  # type: ignore[operator]
        totals["passes"][info["generation"]] += 1  # type: ignore[index]
        totals["collected"] += info["collected"]  # type: ignore[operator]

    def dump(signum: int, frame: Any) -> None:
        totals["seq"] += 1  # type: ignore[operator]
        with open(path, "w", encoding="utf-8") as out:
            json.dump(totals, out)

    gc.callbacks.append(callback)
    signal.signal(signal.SIGUSR1, dump)

"""The apps the HTTP benchmark compares: one Starlette app, bare or behind each contender.

Importable by uvicorn as factories: ``benchmarks._apps:bare`` etc., with ``BENCH_ROUTES`` (route
count) in the environment.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
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


def bare(routes: int | None = None) -> Any:
    return base_app(routes)


def asgi_perf(routes: int | None = None) -> Any:
    from asgi_perf import PerfMiddleware, PerfRegistry

    app = base_app(routes)
    app.add_middleware(PerfMiddleware, registry=PerfRegistry())
    return app


def asgi_perf_constant_labels(routes: int | None = None) -> Any:
    """asgi-perf with the options decided at construction: constant labels, skip_methods."""
    from asgi_perf import PerfMiddleware, PerfRegistry

    app = base_app(routes)
    app.add_middleware(
        PerfMiddleware,
        registry=PerfRegistry(),
        labels={"app_name": "bench"},
        skip_methods=["OPTIONS"],
    )
    return app


def asgi_perf_featured(routes: int | None = None) -> Any:
    """asgi-perf with the per-request features: a label_from callable and a sync hook."""
    from asgi_perf import PerfMiddleware, PerfRegistry

    def scheme(scope: Any) -> str:
        return str(scope["scheme"])

    def hook(info: Any) -> None:
        return None

    app = base_app(routes)
    app.add_middleware(
        PerfMiddleware, registry=PerfRegistry(), label_from={"scheme": scheme}, on_request=hook
    )
    return app


def asgi_perf_pfi_compat(routes: int | None = None) -> Any:
    """asgi-perf exposing the instrumentator's names: its high-resolution histogram is the one
    knob that costs on the request path."""
    from asgi_perf import PerfMiddleware, PerfRegistry

    app = base_app(routes)
    registry = PerfRegistry(compat="prometheus-fastapi-instrumentator")
    app.add_middleware(PerfMiddleware, registry=registry)
    return app


def asgi_perf_multiworker(routes: int | None = None) -> Any:
    """asgi-perf in multi-worker mode: counters and histograms in a shared-memory file."""
    import atexit
    import shutil
    import tempfile

    from asgi_perf import PerfMiddleware, PerfRegistry
    from asgi_perf.export import enable_multiprocess

    directory = tempfile.mkdtemp(prefix="asgi-perf-bench-")
    atexit.register(shutil.rmtree, directory, True)
    app = base_app(routes)
    registry = PerfRegistry()
    # The publisher (gauges) is left idle: what is measured is the request path.
    enable_multiprocess(registry, directory, interval=3600)
    app.add_middleware(PerfMiddleware, registry=registry)
    return app


def asgi_perf_before(routes: int | None = None) -> Any:
    """An earlier asgi-perf for a before/after comparison in one run.

    ``BENCH_BEFORE_PATH`` names a directory holding that version's package renamed
    ``asgi_perf_before`` (``git archive <ref> asgi_perf | tar -x`` then rename: its imports are
    relative).
    """
    import sys

    sys.path.insert(0, os.environ["BENCH_BEFORE_PATH"])
    from asgi_perf_before import PerfMiddleware, PerfRegistry

    app = base_app(routes)
    app.add_middleware(PerfMiddleware, registry=PerfRegistry())
    return app


def instrumentator(routes: int | None = None) -> Any:
    from prometheus_client import CollectorRegistry
    from prometheus_fastapi_instrumentator import Instrumentator

    app = base_app(routes)
    Instrumentator(registry=CollectorRegistry()).instrument(app)
    return app


def starlette_exporter(routes: int | None = None) -> Any:
    from starlette_exporter import PrometheusMiddleware

    app = base_app(routes)
    app.add_middleware(PrometheusMiddleware, group_paths=True)
    return app


_otel_provider: Any = None


def opentelemetry(routes: int | None = None) -> Any:
    """OpenTelemetry's ASGI middleware with its Prometheus reader (metrics), no-op tracer."""
    global _otel_provider  # noqa: PLW0603 - one MeterProvider per process, as OTel expects
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.metrics import MeterProvider

    if _otel_provider is None:
        _otel_provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    app = base_app(routes)
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


#: ``bench_http.py --exemplars``: the cost of exemplars (opentelemetry-api installed).
EXEMPLAR_CONTENDERS: dict[str, Callable[..., Any]] = {
    "bare": bare,
    "asgi-perf exemplars off": asgi_perf_no_exemplars,
    "asgi-perf no span": asgi_perf,
    "bare in span": bare_in_span,
    "asgi-perf in span": asgi_perf_in_span,
}

CONTENDERS: dict[str, Callable[..., Any]] = {
    "bare": bare,
    "asgi-perf": asgi_perf,
    "asgi-perf multi-worker": asgi_perf_multiworker,
    "asgi-perf constant labels": asgi_perf_constant_labels,
    "asgi-perf label_from+hook": asgi_perf_featured,
    "asgi-perf pfi-compat": asgi_perf_pfi_compat,
    "prometheus-fastapi-instrumentator": instrumentator,
    "starlette-exporter": starlette_exporter,
    "opentelemetry-asgi": opentelemetry,
}
if os.environ.get("BENCH_BEFORE_PATH"):
    CONTENDERS = {"bare": bare, "asgi-perf before": asgi_perf_before, **CONTENDERS}

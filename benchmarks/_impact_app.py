"""The app of ``bench_scrape_impact.py``: 400 routes, instrumented, with ``/metrics`` and the
JSON summary served by the package's metrics app.

``BENCH_VARIANT=before`` serves both the way they were built before the fast paths, on the same
registry and the same metrics app: ``/metrics`` rendered by prometheus_client's
``generate_latest`` (the fast renderer declined for every encoder) and the summary read entirely
through ``collect()``. ``after`` (default) is the package as it is.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_perf import PerfRegistry, instrument
from asgi_perf.export._render import Renderers
from asgi_perf.operations import _samples

ROUTES = int(os.environ.get("BENCH_ROUTES", "400"))
VARIANT = os.environ.get("BENCH_VARIANT", "after")

if VARIANT == "before":
    Renderers.for_encoder = lambda self, encoder: None  # type: ignore[method-assign,assignment]
    _read = _samples.Samples.__init__

    def _collect_only(self: Any, registry: PerfRegistry, *, rows: bool = True) -> None:
        _read(self, registry, rows=False)

    _samples.Samples.__init__ = _collect_only  # type: ignore[method-assign]
elif VARIANT != "after":
    raise SystemExit(f"BENCH_VARIANT must be before or after, got {VARIANT!r}")


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


registry = PerfRegistry()
app = Starlette(routes=[Route(f"/r{i}/{{id}}", ok) for i in range(ROUTES)])
instrument(app, registry=registry, operations=True, metrics_options={"allow": ["127.0.0.1"]})

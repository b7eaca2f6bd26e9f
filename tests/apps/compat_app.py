"""A FastAPI app exposing its metrics with the compat preset named in ``ASGI_PERF_TEST_COMPAT``.

With ``ASGI_PERF_TEST_SIDE_BY_SIDE=1`` prometheus-fastapi-instrumentator instruments it too, on
prometheus_client's global registry at ``/metrics``; asgi-perf then serves ``/asgi-perf/metrics``.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from asgi_perf import PerfRegistry, instrument

app = FastAPI()
side_by_side = os.environ.get("ASGI_PERF_TEST_SIDE_BY_SIDE") == "1"
if side_by_side:
    from prometheus_fastapi_instrumentator import Instrumentator

    Instrumentator().instrument(app).expose(app)
registry = instrument(
    app,
    registry=PerfRegistry(compat=os.environ.get("ASGI_PERF_TEST_COMPAT") or None),
    metrics_path="/asgi-perf/metrics" if side_by_side else "/metrics",
)


@app.get("/")
async def index() -> str:
    return "ok"


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


@app.get("/fail")
async def fail() -> PlainTextResponse:
    return PlainTextResponse("failed", status_code=500)

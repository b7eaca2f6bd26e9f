"""A Starlette app recording native histograms (classic buckets kept), for the Prometheus test.

``GET /sleep/{ms}`` answers after ``ms`` milliseconds, so the test chooses the latency
distribution; ``ASGI_PERF_NATIVE_CLASSIC=0`` drops the classic buckets.
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_perf import NativeHistograms, PerfRegistry, instrument


async def sleep(request: Request) -> PlainTextResponse:
    await asyncio.sleep(int(request.path_params["ms"]) / 1000)
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/sleep/{ms:int}", sleep)])
registry = PerfRegistry(
    native_histograms=NativeHistograms(classic=os.environ.get("ASGI_PERF_NATIVE_CLASSIC") != "0")
)
instrument(app, registry=registry)

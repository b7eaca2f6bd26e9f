"""A Starlette app recording native histograms (classic buckets kept), for the Prometheus test.

``GET /sleep/{ms}`` answers after ``ms`` milliseconds, so the test chooses the latency
distribution; ``GET /pid/{ms}`` does the same and answers with the worker's pid (multi-worker
tests); ``ASGI_PERF_NATIVE_CLASSIC=0`` drops the classic buckets.
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from asgi_perf import NativeHistograms, PerfRegistry, instrument


async def sleep(request: Request) -> PlainTextResponse:
    await asyncio.sleep(int(request.path_params["ms"]) / 1000)
    return PlainTextResponse("ok")


async def pid(request: Request) -> JSONResponse:
    await asyncio.sleep(int(request.path_params["ms"]) / 1000)
    return JSONResponse(os.getpid())


app = Starlette(routes=[Route("/sleep/{ms:int}", sleep), Route("/pid/{ms:int}", pid)])
registry = PerfRegistry(
    native_histograms=NativeHistograms(classic=os.environ.get("ASGI_PERF_NATIVE_CLASSIC") != "0")
)
instrument(app, registry=registry)

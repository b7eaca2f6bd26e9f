"""The bare twin of ``examples/multiworker_app.py``: the same route and work, no asgi-perf."""

from __future__ import annotations

import os

import cachetools
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

squares: cachetools.LRUCache[int, int] = cachetools.LRUCache(100)


async def work(request: Request) -> JSONResponse:
    squares[len(squares) % 50] = len(squares) ** 2
    return JSONResponse({"worker": os.getpid()})


app = Starlette(routes=[Route("/work", work)])

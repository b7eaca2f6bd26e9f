"""Multi-worker mode: one /metrics answering for every uvicorn worker.

Run:
    mkdir -p /tmp/metrics && rm -rf /tmp/metrics/*
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics uvicorn examples.multiworker_app:app --workers 4
    for i in $(seq 100); do curl -s localhost:8000/work > /dev/null; done
    curl -s localhost:8000/metrics | grep -E '^http_requests_total|^cache_entries'

Every scrape shows all 100 requests, whichever worker answers it, and cache_entries summed over
the live workers. Kill a worker (kill -9 <pid>): uvicorn starts a new one, the totals stay.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_perf import instrument
from asgi_perf.cache import LRUCache


async def work(request: Request) -> JSONResponse:
    squares[len(squares) % 50] = len(squares) ** 2
    return JSONResponse({"worker": os.getpid()})


app = Starlette(routes=[Route("/work", work)])
# With PROMETHEUS_MULTIPROC_DIR set, instrument() turns multi-worker mode on by itself.
registry = instrument(app)
squares: LRUCache[int, int] = LRUCache(100, name="squares", registry=registry)

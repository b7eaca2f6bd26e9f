"""A small app with the operations layer on: timers, summary, history, alerts and the dashboard.

Run it with ``uvicorn examples.operations_app:app`` and open
http://127.0.0.1:8000/metrics/dashboard (JSON at /metrics/summary, /metrics/history and
/metrics/alerts; Prometheus text at /metrics).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from asgi_perf import PerfRegistry, instrument
from asgi_perf.operations import DEFAULT_RULES, AlertRule, CallbackNotifier, LogNotifier, enable

logging.basicConfig(level=logging.INFO)
registry = PerfRegistry()


@registry.timed("pricing.quote")
async def quote(item_id: int) -> float:
    await asyncio.sleep(random.uniform(0.001, 0.02))
    return round(item_id * 1.2, 2)


async def item(request: Request) -> Response:
    price = await quote(request.path_params["item_id"])
    registry.count("quotes_served")
    return JSONResponse({"id": request.path_params["item_id"], "price": price})


async def report(request: Request) -> Response:
    with registry.timer("report.build"):
        rows = sorted(random.random() for _ in range(50_000))
    return JSONResponse({"rows": len(rows), "stats": registry.stats("report.build")})


def page_me(alert: dict[str, Any]) -> None:
    print(f"ALERT {alert['rule']} is {alert['state']} (value {alert['value']})")


app = Starlette(routes=[Route("/items/{item_id:int}", item), Route("/report", report)])
# The operations endpoints are opt-in, and they show SQL text and host figures: keep them to
# this machine (or use basic_auth=("user", "password"), which a browser can send).
instrument(app, registry=registry, operations=True, metrics_options={"allow": ["127.0.0.1", "::1"]})
enable(
    app,
    registry,
    interval=5.0,
    rules=[*DEFAULT_RULES, AlertRule("Busy", "http.in_progress", ">", 50, 30, "warning")],
    notifiers=[LogNotifier(), CallbackNotifier(page_me)],
    # webhook_url="https://hooks.example.com/asgi-perf",
)

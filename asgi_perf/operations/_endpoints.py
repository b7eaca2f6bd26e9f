"""Bodies of the operations endpoints the metrics app serves next to ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from ..registry import PerfRegistry
from ._keys import ALERTS, MONITOR
from ._schema import Summary
from ._summary import Summarizer

JSON = "application/json"
HTML = "text/html; charset=utf-8"
ERR_QUERY = "bad query: since must be a number and limit an integer >= 0"


def _jsonable(value: Any) -> Any:
    # Browsers' JSON.parse rejects NaN/Infinity, which json.dumps would happily write.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    return json.dumps(_jsonable(value), separators=(",", ":"), default=str).encode()


@lru_cache(maxsize=1)
def dashboard_html() -> bytes:
    """The dashboard page with its stylesheet and script inlined: one self-contained response."""
    root = resources.files("asgi_perf.operations") / "dashboard"
    html = (root / "index.html").read_text("utf-8")
    css = (root / "dashboard.css").read_text("utf-8")
    js = (root / "dashboard.js").read_text("utf-8")
    html = html.replace("/*__CSS__*/", css).replace("/*__JS__*/", js)
    return html.encode()


def summary(perf: PerfRegistry) -> Summary:
    return Summarizer.of(perf).build()


def history(perf: PerfRegistry, since: float | None, limit: int | None) -> dict[str, Any]:
    monitor = perf.find_component(MONITOR)
    if monitor is None:
        return {"enabled": False, "interval": None, "size": 0, "snapshots": []}
    return {
        "enabled": True,
        "interval": monitor.interval,
        "size": monitor.history_size,
        "snapshots": monitor.history(since=since, limit=limit),
    }


def alerts(perf: PerfRegistry) -> dict[str, Any]:
    manager = perf.find_component(ALERTS)
    if manager is None:
        return {"enabled": False, "alerts": [], "silences": {}}
    return {"enabled": True, "alerts": manager.states(), "silences": manager.silences()}


def _query(raw: bytes) -> tuple[float | None, int | None]:
    params = parse_qs(raw.decode("latin-1"))
    since = float(params["since"][0]) if "since" in params else None
    limit = int(params["limit"][0]) if "limit" in params else None
    if (since is not None and not math.isfinite(since)) or (limit is not None and limit < 0):
        raise ValueError(ERR_QUERY)
    return since, limit


async def render_endpoint(
    endpoint: str, perf: PerfRegistry, query: bytes, in_thread: bool
) -> tuple[int, bytes, str]:
    """(status, body, content type) for one operations endpoint."""
    if endpoint == "dashboard":
        return 200, dashboard_html(), HTML
    if endpoint == "history":
        try:
            since, limit = _query(query)
        except ValueError:
            return 400, dumps({"error": ERR_QUERY}), JSON
        return 200, dumps(history(perf, since, limit)), JSON
    if endpoint == "alerts":
        return 200, dumps(alerts(perf)), JSON

    def build() -> bytes:
        return dumps(summary(perf))

    if in_thread:
        # Building the summary collects the whole registry: keep it off the event loop.
        return 200, await asyncio.get_running_loop().run_in_executor(None, build), JSON
    return 200, build(), JSON


__all__ = ["dashboard_html", "dumps", "render_endpoint"]

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
JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
ERR_QUERY = "bad query: since must be a number and limit an integer >= 0"

#: The dashboard's polling period in seconds: ``?refresh=`` is clamped into this range.
REFRESH_RANGE = (1.0, 3600.0)
DEFAULT_REFRESH = 5.0
#: The most snapshots one ``/history`` answer holds, whatever ``?limit=`` asks.
MAX_HISTORY_LIMIT = 10_000

#: The page loads its script and stylesheet from this origin only: nothing inline, no framing.
DASHBOARD_CSP = (
    "default-src 'self'; base-uri 'none'; form-action 'none'; object-src 'none'; "
    "frame-ancestors 'none'"
)
DASHBOARD_HEADERS = (
    (b"content-security-policy", DASHBOARD_CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)

Headers = tuple[tuple[bytes, bytes], ...]


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


@lru_cache(maxsize=4)
def dashboard_file(name: str) -> str:
    """One of the dashboard's files shipped in the package (``index.html``, ``dashboard.js``...)."""
    return (resources.files("asgi_perf.operations") / "dashboard" / name).read_text("utf-8")


def refresh_seconds(raw: bytes) -> float:
    """``?refresh=`` clamped into :data:`REFRESH_RANGE`; anything unreadable is the default."""
    try:
        value = float(parse_qs(raw.decode("latin-1"))["refresh"][0])
    except (KeyError, ValueError):
        return DEFAULT_REFRESH
    if not math.isfinite(value):
        return DEFAULT_REFRESH
    return min(max(value, REFRESH_RANGE[0]), REFRESH_RANGE[1])


def dashboard_html(query: bytes = b"") -> bytes:
    """The dashboard page; its script and stylesheet are separate files (see the CSP)."""
    refresh = f"{refresh_seconds(query):g}"
    return dashboard_file("index.html").replace("__REFRESH__", refresh).encode()


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
    return since, min(limit if limit is not None else MAX_HISTORY_LIMIT, MAX_HISTORY_LIMIT)


async def render_endpoint(
    endpoint: str, perf: PerfRegistry, query: bytes, in_thread: bool
) -> tuple[int, bytes, str, Headers]:
    """(status, body, content type, extra headers) for one operations endpoint."""
    if endpoint == "dashboard":
        return 200, dashboard_html(query), HTML, DASHBOARD_HEADERS
    if endpoint == "dashboard.js":
        return 200, dashboard_file("dashboard.js").encode(), JS, ()
    if endpoint == "dashboard.css":
        return 200, dashboard_file("dashboard.css").encode(), CSS, ()
    if endpoint == "history":
        try:
            since, limit = _query(query)
        except ValueError:
            return 400, dumps({"error": ERR_QUERY}), JSON, ()
        return 200, dumps(history(perf, since, limit)), JSON, ()
    if endpoint == "alerts":
        return 200, dumps(alerts(perf)), JSON, ()

    def build() -> bytes:
        return dumps(summary(perf))

    if in_thread:
        # Building the summary reads every collector (tens of ms at hundreds of routes): keep it
        # off the event loop.
        return 200, await asyncio.get_running_loop().run_in_executor(None, build), JSON, ()
    return 200, build(), JSON, ()


__all__ = [
    "DASHBOARD_CSP",
    "MAX_HISTORY_LIMIT",
    "REFRESH_RANGE",
    "dashboard_file",
    "dashboard_html",
    "dumps",
    "refresh_seconds",
    "render_endpoint",
]

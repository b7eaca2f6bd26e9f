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
from ._summary import MAX_WINDOW, Summarizer

JSON = "application/json"
HTML = "text/html; charset=utf-8"
JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
ERR_QUERY = "bad query: since must be a number and limit an integer >= 0"
ERR_WINDOW_QUERY = "bad query: window must be a number of seconds > 0"

#: The dashboard's polling period in seconds: ``?refresh=`` is clamped into this range.
REFRESH_RANGE = (1.0, 3600.0)
DEFAULT_REFRESH = 5.0
#: The dashboard's rates and percentiles cover this many seconds unless ``?window=`` says
#: otherwise (never less than the refresh, so no request falls between two reads).
DEFAULT_DASHBOARD_WINDOW = 30.0
#: The most snapshots one ``/history`` answer holds, whatever ``?limit=`` asks.
MAX_HISTORY_LIMIT = 10_000

#: The page loads its script and stylesheet from this origin only: nothing inline, no framing.
#: Images may also be ``data:`` URLs, for the page's empty icon (see index.html).
DASHBOARD_CSP = (
    "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "object-src 'none'; frame-ancestors 'none'"
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


#: The vendored chart library's files (see ``dashboard/vendor/README``), by endpoint name.
VENDORED = {"uplot.js": "vendor/uPlot.iife.min.js", "uplot.css": "vendor/uPlot.min.css"}


@lru_cache(maxsize=8)
def dashboard_file(name: str) -> str:
    """One of the dashboard's files shipped in the package (``index.html``, ``dashboard.js``...)."""
    path = resources.files("asgi_perf.operations") / "dashboard"
    for part in name.split("/"):
        path = path / part
    return path.read_text("utf-8")


def _number(raw: bytes, name: str) -> float | None:
    try:
        value = float(parse_qs(raw.decode("latin-1"))[name][0])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def refresh_seconds(raw: bytes) -> float:
    """``?refresh=`` clamped into :data:`REFRESH_RANGE`; anything unreadable is the default."""
    value = _number(raw, "refresh")
    if value is None:
        return DEFAULT_REFRESH
    return min(max(value, REFRESH_RANGE[0]), REFRESH_RANGE[1])


def window_seconds(raw: bytes, refresh: float) -> float:
    """``?window=`` for the page: at least ``refresh``, at most ``MAX_WINDOW`` (default 30 s)."""
    value = _number(raw, "window")
    if value is None:
        value = DEFAULT_DASHBOARD_WINDOW
    return min(max(value, refresh), MAX_WINDOW)


def dashboard_html(query: bytes = b"") -> bytes:
    """The dashboard page; its script and stylesheet are separate files (see the CSP)."""
    refresh = refresh_seconds(query)
    window = window_seconds(query, refresh)
    page = dashboard_file("index.html").replace("__REFRESH__", f"{refresh:g}")
    return page.replace("__WINDOW__", f"{window:g}").encode()


def summary(perf: PerfRegistry, window: float | None = None) -> Summary:
    return Summarizer.of(perf).build(window=window)


def _window_query(raw: bytes) -> float | None:
    params = parse_qs(raw.decode("latin-1"))
    if "window" not in params:
        return None
    value = float(params["window"][0])
    if not (math.isfinite(value) and value > 0):
        raise ValueError(ERR_WINDOW_QUERY)
    return value


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
    if endpoint in VENDORED:
        kind = JS if endpoint.endswith(".js") else CSS
        return 200, dashboard_file(VENDORED[endpoint]).encode(), kind, ()
    if endpoint == "history":
        try:
            since, limit = _query(query)
        except ValueError:
            return 400, dumps({"error": ERR_QUERY}), JSON, ()
        return 200, dumps(history(perf, since, limit)), JSON, ()
    if endpoint == "alerts":
        return 200, dumps(alerts(perf)), JSON, ()

    try:
        window = _window_query(query)
    except ValueError:
        return 400, dumps({"error": ERR_WINDOW_QUERY}), JSON, ()

    def build() -> bytes:
        return dumps(summary(perf, window))

    if in_thread:
        # Building the summary collects the whole registry: keep it off the event loop.
        return 200, await asyncio.get_running_loop().run_in_executor(None, build), JSON, ()
    return 200, build(), JSON, ()


__all__ = [
    "DASHBOARD_CSP",
    "DEFAULT_DASHBOARD_WINDOW",
    "ERR_WINDOW_QUERY",
    "MAX_HISTORY_LIMIT",
    "REFRESH_RANGE",
    "VENDORED",
    "dashboard_file",
    "dashboard_html",
    "dumps",
    "refresh_seconds",
    "render_endpoint",
    "window_seconds",
]

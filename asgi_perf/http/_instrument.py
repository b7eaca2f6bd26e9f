"""``instrument(app)``: the one-line set-up for Starlette / FastAPI apps."""

from __future__ import annotations

from typing import Any

from ..export import OPS_ENDPOINTS, metrics_app
from ..registry import PerfRegistry
from ._features import DISABLE_ENV, disabled_by_env
from ._middleware import PerfMiddleware

ERR_NOT_STARLETTE = (
    "instrument() needs a Starlette or FastAPI app (with add_middleware and add_route); "
    "for other ASGI apps wrap it yourself: PerfMiddleware(app, registry=...)"
)
ERR_METRICS_PATH = (
    "metrics_path must not end in summary, history, alerts, dashboard, dashboard.js, "
    "dashboard.css, uplot.js or uplot.css (the metrics app keeps those for its operations "
    "endpoints), got {!r}"
)
ERR_OPERATIONS_OPTION = (
    "pass operations= to instrument() itself, not in metrics_options: it decides the routes too"
)


def instrument(
    app: Any,
    *,
    registry: PerfRegistry | None = None,
    metrics_path: str | None = "/metrics",
    metrics_options: dict[str, Any] | None = None,
    operations: bool = False,
    **middleware_options: Any,
) -> PerfRegistry:
    """Add :class:`PerfMiddleware` and a metrics route to a Starlette/FastAPI app.

    :param metrics_path: where to serve the metrics (``None``: do not add the route). Its last
        segment must not be ``summary``, ``history``, ``alerts`` or ``dashboard``.
    :param metrics_options: keyword arguments for :func:`metrics_app` (``token``, ``allow``, ...).
    :param operations: also serve ``<metrics_path>/summary``, ``/history``, ``/alerts`` and
        ``/dashboard`` (same access rules as the metrics). Off by default; on without ``token``,
        ``basic_auth`` or ``allow`` in ``metrics_options`` it logs one warning.
    :param middleware_options: keyword arguments for :class:`PerfMiddleware`
        (``record_own_endpoints=True`` records the requests to the routes added here, too).
    :returns: the registry everything reports into (a fresh one unless given). When the
        middleware's ``disable_env`` variable (``ASGI_PERF_DISABLED`` by default) switches
        asgi-perf off, the options are still validated but nothing is added to the app.
    :raises ValueError: on any bad option, and when the registry already records HTTP metrics
        with other buckets; both are checked here, not when Starlette first builds its stack.
    """
    if not (
        callable(getattr(app, "add_middleware", None)) and callable(getattr(app, "add_route", None))
    ):
        raise ValueError(ERR_NOT_STARLETTE)
    if registry is None:
        registry = PerfRegistry()
    if metrics_path is not None and not metrics_path.startswith("/"):
        raise ValueError(f"metrics_path must start with '/', got {metrics_path!r}")
    if metrics_path is not None and metrics_path.rstrip("/").rpartition("/")[2] in OPS_ENDPOINTS:
        # The metrics app picks the endpoint from the last path segment, wherever it is routed.
        raise ValueError(ERR_METRICS_PATH.format(metrics_path))
    if metrics_options and "operations" in metrics_options:
        raise ValueError(ERR_OPERATIONS_OPTION)
    exposition = metrics_app(registry, operations=operations, **(metrics_options or {}))
    # Validate the middleware options now, not at the first request: add_middleware defers
    # construction until the app builds its stack, where an error would fail every request.
    # Built on the real registry, so its buckets are claimed there and a conflict with another
    # middleware on the same registry is a ValueError now.
    PerfMiddleware(_noop_app, registry=registry, **middleware_options)
    if disabled_by_env(middleware_options.get("disable_env", DISABLE_ENV)):
        return registry
    if metrics_path is not None and not middleware_options.get("record_own_endpoints", False):
        # Skipped before the app runs, so a scrape or a dashboard poll is not even "in progress"
        # while it builds the figures it shows (the metrics app's own mark comes too late for
        # that; it still covers the same paths reached some other way).
        middleware_options["exclude_paths"] = (
            *_as_paths(middleware_options.get("exclude_paths", ())),
            *_own_paths(metrics_path, operations),
        )
    app.add_middleware(PerfMiddleware, registry=registry, **middleware_options)
    if metrics_path is not None:
        app.add_route(metrics_path, exposition, include_in_schema=False)
        if operations:
            base = metrics_path.rstrip("/")
            for endpoint in sorted(OPS_ENDPOINTS):
                app.add_route(f"{base}/{endpoint}", exposition, include_in_schema=False)
    return registry


def _as_paths(paths: Any) -> tuple[str, ...]:
    return (paths,) if isinstance(paths, str) else tuple(paths)


def _own_paths(metrics_path: str, operations: bool) -> tuple[str, ...]:
    base = metrics_path.rstrip("/")
    paths = [metrics_path]
    if operations:
        paths += [f"{base}/{endpoint}" for endpoint in sorted(OPS_ENDPOINTS)]
    return tuple(paths)


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
    return None

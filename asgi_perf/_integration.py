"""``instrument(app)``: the one-line set-up for Starlette / FastAPI apps."""

from __future__ import annotations

from typing import Any

from .exposition import metrics_app
from .middleware import PerfMiddleware
from .registry import PerfRegistry

ERR_NOT_STARLETTE = (
    "instrument() needs a Starlette or FastAPI app (with add_middleware and add_route); "
    "for other ASGI apps wrap it yourself: PerfMiddleware(app, registry=...)"
)


def instrument(
    app: Any,
    *,
    registry: PerfRegistry | None = None,
    metrics_path: str | None = "/metrics",
    metrics_options: dict[str, Any] | None = None,
    **middleware_options: Any,
) -> PerfRegistry:
    """Add :class:`PerfMiddleware` and a metrics route to a Starlette/FastAPI app.

    :param metrics_path: where to serve the metrics (``None``: do not add the route).
    :param metrics_options: keyword arguments for :func:`metrics_app` (``token``, ``allow``, ...).
    :param middleware_options: keyword arguments for :class:`PerfMiddleware`.
    :returns: the registry everything reports into (a fresh one unless given).
    """
    if not (
        callable(getattr(app, "add_middleware", None)) and callable(getattr(app, "add_route", None))
    ):
        raise ValueError(ERR_NOT_STARLETTE)
    if registry is None:
        registry = PerfRegistry()
    if metrics_path is not None and not metrics_path.startswith("/"):
        raise ValueError(f"metrics_path must start with '/', got {metrics_path!r}")
    exposition = metrics_app(registry, **(metrics_options or {}))
    # Validate the middleware options now, not at the first request: add_middleware defers
    # construction until the app builds its stack.
    PerfMiddleware(_noop_app, registry=PerfRegistry(), **middleware_options)
    app.add_middleware(PerfMiddleware, registry=registry, **middleware_options)
    if metrics_path is not None:
        app.add_route(metrics_path, exposition, include_in_schema=False)
    return registry


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
    return None

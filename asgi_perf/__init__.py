"""asgi-perf: cheap, correct performance metrics for ASGI services.

One :class:`PerfRegistry` at the centre; :class:`PerfMiddleware` times HTTP requests into it;
:func:`metrics_app` serves it; :func:`instrument` wires both into a Starlette/FastAPI app. Each
other feature is a subpackage with its own door (``asgi_perf.sqlalchemy``, ``asgi_perf.socketio``,
``asgi_perf.cache``, ``asgi_perf.operations``, ``asgi_perf.export``), so importing this package
needs only ``prometheus-client``. ``docs/architecture.md`` draws the layout and its rules.
"""

from .__about__ import __version__
from ._labels import OTHER, OVERFLOW, UNMATCHED
from .catalogue import CATALOGUE, MetricSpec
from .export import MetricsApp, metrics_app
from .http import PerfMiddleware, RequestInfo, RouteResolver, instrument
from .registry import PerfRegistry

__all__ = [
    "CATALOGUE",
    "OTHER",
    "OVERFLOW",
    "UNMATCHED",
    "MetricSpec",
    "MetricsApp",
    "PerfMiddleware",
    "PerfRegistry",
    "RequestInfo",
    "RouteResolver",
    "__version__",
    "instrument",
    "metrics_app",
]

"""asgi-perf: cheap, correct performance metrics for ASGI services.

One :class:`PerfRegistry` at the centre; :class:`PerfMiddleware` times HTTP requests into it;
:func:`metrics_app` serves it; :func:`instrument` wires both into a Starlette/FastAPI app. The
Socket.IO, SQLAlchemy and cache integrations live in their own modules (``asgi_perf.socketio``,
``asgi_perf.sqlalchemy``, ``asgi_perf.cache``) so importing this package needs only
``prometheus-client``.
"""

from .__about__ import __version__
from ._integration import instrument
from ._labels import OTHER, OVERFLOW, UNMATCHED
from .catalogue import CATALOGUE, MetricSpec
from .exposition import MetricsApp, metrics_app
from .middleware import PerfMiddleware
from .registry import PerfRegistry
from .routing import RouteResolver

__all__ = [
    "CATALOGUE",
    "OTHER",
    "OVERFLOW",
    "UNMATCHED",
    "MetricSpec",
    "MetricsApp",
    "PerfMiddleware",
    "PerfRegistry",
    "RouteResolver",
    "__version__",
    "instrument",
    "metrics_app",
]

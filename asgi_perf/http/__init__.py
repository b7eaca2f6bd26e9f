"""HTTP: the pure-ASGI timing middleware, route resolution and the one-line ``instrument()``.

:class:`PerfMiddleware` times every HTTP request into the registry (see ``docs/http.md``);
:class:`RouteResolver` turns a request into its route template so labels stay bounded;
:func:`instrument` adds the middleware and the metrics app to a Starlette/FastAPI app;
:class:`RequestInfo` is what an ``on_request`` hook receives, and :data:`DISABLE_ENV` names the
environment variable that switches it all off. The
package root re-exports all three, so ``from asgi_perf import PerfMiddleware`` is the usual
spelling.
"""

from ._features import (
    DISABLE_ENV,
    RequestInfo,
)
from ._instrument import (
    instrument,
)
from ._middleware import (
    CLIENT_CLOSED_REQUEST,
    PerfMiddleware,
    RouteGetter,
)
from ._routing import (
    RouteResolver,
)

__all__ = [
    "CLIENT_CLOSED_REQUEST",
    "DISABLE_ENV",
    "PerfMiddleware",
    "RequestInfo",
    "RouteGetter",
    "RouteResolver",
    "instrument",
]

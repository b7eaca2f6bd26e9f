"""``asgi-perf demo``: one example app with every instrument on, and the traffic that drives it.

``uvicorn --factory asgi_perf.demo:create_app`` serves the app; :func:`run_demo` serves it,
generates HTTP and Socket.IO traffic and prints a report. Needs the ``demo`` extra.
"""

from ._app import (
    build_demo,
    create_app,
)
from ._run import (
    run_demo,
)

__all__ = [
    "build_demo",
    "create_app",
    "run_demo",
]

"""Optional dependencies: a missing one fails the import with the extra that installs it.

A module that needs an extra imports it inside :func:`requires`::

    with requires("asgi_perf.cache", extra="cachetools"):
        import cachetools

so ``import asgi_perf.cache`` without cachetools raises ``ImportError: asgi_perf.cache needs
cachetools: pip install "asgi-perf[cachetools]"``, chained to the original error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

ERR_MISSING = '{feature} needs {package}: pip install "asgi-perf[{extra}]"'

#: Import name -> the distribution to install, where they differ.
_DISTRIBUTIONS = {"socketio": "python-socketio", "sqlalchemy": "SQLAlchemy"}


@contextlib.contextmanager
def requires(feature: str, *, extra: str) -> Iterator[None]:
    """Turn a missing top-level module imported in the block into an ImportError naming ``extra``.

    A module missing *inside* an installed package (its own optional dependency) is not the
    user's missing extra: that error passes through unchanged.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        if not exc.name or "." in exc.name:
            raise
        package = _DISTRIBUTIONS.get(exc.name, exc.name)
        message = ERR_MISSING.format(feature=feature, package=package, extra=extra)
        raise ImportError(message, name=exc.name) from exc

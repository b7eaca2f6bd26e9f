"""The public API is exactly what ``__all__`` lists."""

from __future__ import annotations

import asgi_perf


def test_all_lists_every_public_name() -> None:
    """``__all__`` equals the module's public names, so nothing is exported by accident."""
    public = {name for name in dir(asgi_perf) if not name.startswith("_")}
    # Submodules become attributes on import; they are reached by their module path, not exported.
    modules = {name for name in public if type(getattr(asgi_perf, name)).__name__ == "module"}
    assert set(asgi_perf.__all__) - {"__version__"} == public - modules


def test_required_names_present() -> None:
    """The names the README promises are importable from the package root."""
    from asgi_perf import PerfMiddleware, PerfRegistry, instrument, metrics_app

    assert all(callable(x) for x in (PerfMiddleware, PerfRegistry, instrument, metrics_app))

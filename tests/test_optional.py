"""Optional dependencies: a missing extra fails the import with the command that installs it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from asgi_perf._optional import ERR_MISSING, requires

from ._server import ROOT

#: Makes the named top-level modules uninstalled for this interpreter, as pip uninstall would.
BLOCKER = """
import importlib.abc
import sys

class Uninstalled(importlib.abc.MetaPathFinder):
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None

sys.meta_path.insert(0, Uninstalled(sys.argv[1].split(",")))
"""


def run_without(missing: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where the comma-separated modules are not installed."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code), missing],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "missing", "feature", "package", "extra"),
    [
        ("asgi_perf.socketio", "socketio", "asgi_perf.socketio", "python-socketio", "socketio"),
        ("asgi_perf.sqlalchemy", "sqlalchemy", "asgi_perf.sqlalchemy", "SQLAlchemy", "sqlalchemy"),
        ("asgi_perf.cache", "cachetools", "asgi_perf.cache", "cachetools", "cachetools"),
        ("asgi_perf.cache.redis", "redis", "asgi_perf.cache.redis", "redis", "redis"),
        # The Redis tier sits inside asgi_perf.cache, whose door checks for cachetools first.
        ("asgi_perf.cache.redis", "cachetools", "asgi_perf.cache", "cachetools", "cachetools"),
    ],
)
def test_missing_extra_names_the_install_command(
    module: str, missing: str, feature: str, package: str, extra: str
) -> None:
    """Importing an integration without its dependency raises ImportError naming the package
    and the extra, chained from the original ModuleNotFoundError, with no other output."""
    result = run_without(
        missing,
        f"""
        try:
            import {module}
        except ImportError as exc:
            cause = exc.__cause__
            print(type(exc).__name__, exc.name, sep="|")
            print(exc)
            print(type(cause).__name__, cause.name, sep="|")
        """,
    )
    assert result.returncode == 0, result.stderr
    kind, message, cause = result.stdout.splitlines()
    assert kind == f"ImportError|{missing}"
    assert message == f'{feature} needs {package}: pip install "asgi-perf[{extra}]"'
    assert message == ERR_MISSING.format(feature=feature, package=package, extra=extra)
    assert cause == f"ModuleNotFoundError|{missing}"


def test_the_traceback_shows_the_hint_last() -> None:
    """Uncaught, the error's last line is the hint a user copies the install command from."""
    result = run_without("sqlalchemy", "import asgi_perf.sqlalchemy")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last
        == 'ImportError: asgi_perf.sqlalchemy needs SQLAlchemy: pip install "asgi-perf[sqlalchemy]"'
    )
    assert "The above exception was the direct cause" in result.stderr


def test_core_needs_no_extra() -> None:
    """Without any extra the core, the exposition and the operations (psutil-less system figures
    included) import, collect and render."""
    result = run_without(
        "socketio,engineio,sqlalchemy,cachetools,redis,psutil,starlette",
        """
        import asyncio
        from prometheus_client import generate_latest
        from asgi_perf import PerfRegistry, instrument, metrics_app
        from asgi_perf.operations import enable

        async def app(scope, receive, send):
            pass

        registry = PerfRegistry()
        enable(app, registry)
        print(b"system_process_resident_bytes" in generate_latest(registry.prometheus))
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]


def test_a_module_missing_inside_an_installed_package_passes_through() -> None:
    """A missing submodule is that package's own problem, not a missing extra: unchanged."""
    original = ModuleNotFoundError("No module named 'pkg.sub'", name="pkg.sub")
    with pytest.raises(ModuleNotFoundError) as caught, requires("asgi_perf.x", extra="x"):
        raise original
    assert caught.value is original


def test_a_missing_top_level_module_becomes_the_hint() -> None:
    """In process too: the block's missing top-level module becomes the ImportError."""
    with (
        pytest.raises(ImportError, match=r'^asgi_perf\.x needs mod: pip install "asgi-perf\[x\]"$'),
        requires("asgi_perf.x", extra="x"),
    ):
        raise ModuleNotFoundError("No module named 'mod'", name="mod")

"""The public API is exactly what each door's ``__all__`` lists, and every documented path works."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

import asgi_perf

ROOT = Path(__file__).resolve().parent.parent

#: The doors: the package root and each feature's face. They only hand names on.
FACES = [
    "asgi_perf",
    "asgi_perf.http",
    "asgi_perf.sqlalchemy",
    "asgi_perf.socketio",
    "asgi_perf.cache",
    "asgi_perf.cache.redis",
    "asgi_perf.operations",
    "asgi_perf.export",
    "asgi_perf.demo",
]
#: Public modules that define what they export.
DEFINING = ["asgi_perf.catalogue", "asgi_perf.compat", "asgi_perf.testing"]
#: Where the docs show imports: every page, the README and the examples.
DOCUMENTS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*.py")]
)
FROM_IMPORT = re.compile(r"^\s*from (asgi_perf[\w.]*) import (\([^)]*\)|[^\n#]+)", re.MULTILINE)
IMPORT = re.compile(r"^\s*import (asgi_perf[\w.]*)", re.MULTILINE)
#: ``asgi_perf.x.y`` named in prose or a command line (``asgi_perf.demo:create_app``).
DOTTED = re.compile(r"`[^`\n]*?\b(asgi_perf(?:\.[\w*]+)+(?::\w+)?)")
#: Dotted names in the docs that are logger names, not import paths.
LOGGERS = {"asgi_perf.push", "asgi_perf.alerts"}


def public_names(module: ModuleType) -> set[str]:
    names = {name for name in vars(module) if not name.startswith("_")}
    # Submodules become attributes on import; they are reached by their module path, not exported.
    return {name for name in names if not isinstance(getattr(module, name), ModuleType)}


@pytest.mark.parametrize("name", FACES)
def test_all_lists_every_public_name(name: str) -> None:
    """A door's ``__all__`` equals its public names, so nothing is exported by accident."""
    module = importlib.import_module(name)
    assert set(module.__all__) - {"__version__"} == public_names(module)


@pytest.mark.parametrize("name", DEFINING)
def test_all_lists_every_public_definition(name: str) -> None:
    """A defining module's ``__all__`` names every public class and function it defines."""
    module = importlib.import_module(name)
    defined = {
        key
        for key, value in vars(module).items()
        if not key.startswith("_") and getattr(value, "__module__", None) == name
    }
    assert defined <= set(module.__all__)
    assert all(hasattr(module, key) for key in module.__all__)


def test_required_names_present() -> None:
    """The names the README promises are importable from the package root."""
    from asgi_perf import PerfMiddleware, PerfRegistry, instrument, metrics_app

    assert all(callable(x) for x in (PerfMiddleware, PerfRegistry, instrument, metrics_app))


def documented_imports() -> list[tuple[str, str, list[str]]]:
    """(document, module, names) for every import statement the docs and examples show."""
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        for module, names in FROM_IMPORT.findall(text):
            listed = [part.split(" as ")[0].strip() for part in names.strip("()").split(",")]
            found.append((where, module, [name for name in listed if name]))
        found.extend((where, module, []) for module in IMPORT.findall(text))
    return found


def documented_references() -> list[tuple[str, str]]:
    """(document, dotted path) for every ``asgi_perf.x.y`` the docs name in code spans."""
    found: list[tuple[str, str]] = []
    for path in DOCUMENTS:
        where = str(path.relative_to(ROOT))
        found.extend((where, ref) for ref in DOTTED.findall(path.read_text()) if ref not in LOGGERS)
    return sorted(set(found))


def test_the_docs_show_imports() -> None:
    """The scan finds the imports the docs are built around, so a broken pattern cannot pass."""
    modules = {module for _, module, _ in documented_imports()}
    assert {"asgi_perf", "asgi_perf.sqlalchemy", "asgi_perf.cache", "asgi_perf.socketio"} <= modules
    assert {"asgi_perf.operations", "asgi_perf.export", "asgi_perf.cache.redis"} <= modules
    assert len(documented_references()) >= 10


@pytest.mark.parametrize(("document", "module", "names"), documented_imports())
def test_documented_import_works(document: str, module: str, names: list[str]) -> None:
    """Every ``from asgi_perf... import ...`` in the docs, README and examples imports as shown,
    from a public module."""
    imported = importlib.import_module(module)
    assert not any(part.startswith("_") for part in module.split(".")), (document, module)
    missing = [name for name in names if not hasattr(imported, name)]
    assert missing == [], (document, module)


def resolve(reference: str) -> object:
    path, _, attribute = reference.partition(":")
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in [*parts[cut:], *([attribute] if attribute else [])]:
            if name.endswith("*"):  # ``asgi_perf.sqlalchemy.ERR_*``: at least one such name
                assert any(n.startswith(name[:-1]) for n in dir(target)), reference
                return target
            target = getattr(target, name)
        return target
    raise AssertionError(reference)


@pytest.mark.parametrize(("document", "reference"), documented_references())
def test_documented_reference_resolves(document: str, reference: str) -> None:
    """Every ``asgi_perf.x.y`` the docs name (in prose or a command line) exists at that path."""
    assert resolve(reference) is not None, document
    path = reference.partition(":")[0]
    assert not any(part.startswith("_") for part in path.split(".")), document


def test_package_root_is_the_everyday_api() -> None:
    """The package root's ``__all__`` is the everyday API: registry, middleware, metrics app."""
    assert {"PerfRegistry", "PerfMiddleware", "instrument", "metrics_app"} <= set(asgi_perf.__all__)

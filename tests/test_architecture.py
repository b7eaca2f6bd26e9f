"""The import rules the package layout encodes, checked over the import graph of ``asgi_perf/``.

``docs/architecture.md`` draws the picture; this module keeps it true. Every ``import`` statement in
every module counts, including the lazy ones inside functions and those under ``TYPE_CHECKING``.

* The core (registry, catalogue, labels, histogram, ASGI types) imports no feature.
* A feature (``http``, ``sqlalchemy``, ``socketio``, ``cache``, ``operations``, ``export``)
  imports the core and itself, never another feature.
* Only ``demo`` and the CLI import every feature; the package root re-exports the HTTP and
  ``/metrics`` entry points; ``testing`` uses the core alone.
* A subpackage's private modules (``_name``) are imported only from inside that subpackage: its
  ``__init__`` is the one door.

The sanctioned exceptions are :data:`EXCEPTIONS`, each with its reason, and nowhere else.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import asgi_perf

PACKAGE_DIR = Path(asgi_perf.__file__).parent
ROOT = "asgi_perf"

#: Modules at the top of the package that make up the core every feature builds on.
CORE = frozenset(
    f"{ROOT}.{name}"
    for name in (
        "__about__",
        "registry",
        "catalogue",
        "compat",
        "_labels",
        "_histogram",
        "_native",
        "_native_layout",
        "_native_snapshots",
        "_shared",
        "_shared_native",
        "_rows",
        "_types",
        "_checks",
        "_optional",
        "_exemplars",
    )
)
#: Feature subpackages: each imports the core and itself only.
FEATURES = ("http", "sqlalchemy", "socketio", "cache", "operations", "export")
#: What every part may import, besides itself. ``*`` is everything.
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset(),
    **{feature: frozenset({"core"}) for feature in FEATURES},
    # The package root is the public face of the everyday API: PerfRegistry, the middleware,
    # instrument() and the metrics app.
    "root": frozenset({"core", "http", "export"}),
    # Test helpers for users' own tests: a registry, a scrape, a sample; nothing else.
    "testing": frozenset({"core"}),
    "demo": frozenset({"*"}),
    "cli": frozenset({"*"}),
}

#: The only imports across the rules above: (importing module, imported part) -> why.
EXCEPTIONS: dict[tuple[str, str], str] = {
    (f"{ROOT}.registry", "operations"): (
        "PerfRegistry.timed/timer/count/stats/summary are the documented shortcuts to the "
        "operations layer's timers and summary; imported on first call, so the core loads alone"
    ),
    (f"{ROOT}.registry", "export"): (
        "PerfRegistry.push() is the documented shortcut to a Pushgateway push; imported on first call"
    ),
    (f"{ROOT}.http._instrument", "export"): (
        "instrument() is the one-line set-up: it adds the middleware and mounts the metrics app"
    ),
    (f"{ROOT}.export._exposition", "operations"): (
        "the metrics app serves the operations endpoints (summary, history, alerts, dashboard) "
        "next to /metrics; the layer is imported when one of those paths is first hit"
    ),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def part_of(module: str) -> str:
    """The part of the layout a module belongs to (``core``, a feature, ``root``, ...)."""
    if module == ROOT:
        return "root"
    if module in CORE:
        return "core"
    top = module.split(".")[1]
    if top in FEATURES or top == "demo":
        return top
    if top in ("cli", "__main__"):
        return "cli"
    if top == "testing":
        return "testing"
    raise AssertionError(
        f"{module} belongs to no part of the layout: place it in test_architecture"
    )


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (PACKAGE_DIR / relative).with_suffix(".py").is_file() or (
        PACKAGE_DIR / relative / "__init__.py"
    ).is_file()


def imports(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported asgi_perf module) for every import statement of ``module``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == ROOT:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            if source.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                # ``from . import _mp_store`` imports a module; ``from .x import name`` a name of x.
                candidate = f"{source}.{alias.name}"
                yield node.lineno, candidate if is_module(candidate) else source


def owner_of_private(module: str) -> str | None:
    """The subpackage whose door a private module sits behind, or None."""
    parts = module.split(".")
    for index in range(2, len(parts)):
        if parts[index].startswith("_") and not parts[index].startswith("__"):
            owner = ".".join(parts[:index])
            return owner if owner != ROOT else None
    return None


EDGES = [
    (importer, line, imported)
    for importer, path in modules().items()
    for line, imported in imports(importer, path)
]


def test_every_module_has_a_place() -> None:
    """Every module of the package belongs to one part of the layout, so none escapes the rules."""
    for module in modules():
        part_of(module)  # raises for an unplaced module
    assert {part_of(module) for module in modules()} == {*ALLOWED}


def test_parts_import_only_what_the_layout_allows() -> None:
    """The core imports no feature; a feature never imports another; only demo and the CLI import all."""
    broken = []
    for importer, line, imported in EDGES:
        mine, theirs = part_of(importer), part_of(imported)
        allowed = ALLOWED[mine]
        if theirs == mine or "*" in allowed or theirs in allowed:
            continue
        if (importer, theirs) in EXCEPTIONS:
            continue
        broken.append(f"{importer}:{line} imports {imported} ({mine} -> {theirs})")
    assert broken == []


def test_every_exception_is_still_needed() -> None:
    """An exception the code no longer uses is struck from the list, so the list stays the truth."""
    used = {(importer, part_of(imported)) for importer, _, imported in EDGES}
    assert set(EXCEPTIONS) - used == set()


def test_private_modules_are_imported_only_from_inside_their_package() -> None:
    """A subpackage's ``_private`` modules are reached only from inside it: its face is the door."""
    broken = []
    for importer, line, imported in EDGES:
        owner = owner_of_private(imported)
        if owner is not None and importer != owner and not importer.startswith(owner + "."):
            broken.append(f"{importer}:{line} imports {imported}, private to {owner}")
    assert broken == []


@pytest.mark.parametrize(
    ("module", "part"),
    [
        ("asgi_perf", "root"),
        ("asgi_perf.registry", "core"),
        ("asgi_perf.cache.redis._tiered", "cache"),
        ("asgi_perf.export._push", "export"),
        ("asgi_perf.__main__", "cli"),
    ],
)
def test_part_of(module: str, part: str) -> None:
    """Modules are placed by their path: nested subpackages belong to their feature."""
    assert part_of(module) == part


def test_relative_imports_resolve_to_modules() -> None:
    """The graph sees ``from . import _mp_store`` as the module and ``from ..registry import X`` as
    the registry, so the rules above judge real modules."""
    edges = {(importer, imported) for importer, _, imported in EDGES}
    assert ("asgi_perf.export._multiprocess", "asgi_perf.export._mp_store") in edges
    assert ("asgi_perf.cache.redis._tiered", "asgi_perf.registry") in edges
    assert all(is_module(imported) for _, _, imported in EDGES)


#: Where typed metric families are built: the registry, from the catalogue. (The multi-worker
#: merge and the push copy families other collectors built, as plain ``Metric`` objects.)
FAMILY_BUILDERS = {f"{ROOT}.registry"}


def test_only_the_registry_builds_metric_families() -> None:
    """Collectors get their families from ``PerfRegistry.family()`` (via ``CatalogueCollector``),
    never from prometheus_client's ``*MetricFamily`` classes, so names, help and labels come from
    the catalogue by construction."""
    broken = []
    for module, path in modules().items():
        if module in FAMILY_BUILDERS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
            if isinstance(node, ast.alias):
                name = node.name
            if isinstance(name, str) and name.endswith("MetricFamily"):
                broken.append(f"{module}:{getattr(node, 'lineno', '?')} uses {name}")
    assert broken == []

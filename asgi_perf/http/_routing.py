"""Route templates from what the router already computed: O(1) per request.

Starlette's router stores the matched route object in ``scope["route"]`` (older releases only
``scope["endpoint"]``). Current FastAPI keeps ``include_router`` prefixes out of the route object
and records the included copy as ``scope["fastapi"]["effective_route_context"]`` instead, so reading
``route.path`` there drops the prefix (the bug OpenTelemetry's ASGI instrumentation has). Mounts
overwrite ``scope["route"]`` with the inner route and leave only the *actual* matched prefix in
``root_path``.

So the resolver keys on the object the router chose (the effective context when it belongs to the
matched route, else the route, else the endpoint) and maps it to its full template with one walk of
the router tree, done the first time an object is seen. Per request that is a few ``scope.get``
calls and one dict lookup, however many routes the app has. An object reachable under several
prefixes (one sub-app mounted twice) is disambiguated by matching the actual mount prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .._labels import UNMATCHED
from .._types import Scope

_MOUNT_SUFFIX = "/{path}"
_PARAM = re.compile(r"\{([^}:]+)(?::([^}]+))?\}")
#: Cap on cached (object, actual mount prefix) pairs for ambiguous objects.
_MAX_AMBIGUOUS = 1024
#: Cap on cached route objects. Real routers reuse a bounded set of route objects; a router that
#: builds a new one per request must not grow the cache (past the cap such objects are resolved
#: each time, at the cost of a walk).
MAX_CACHED_ROUTES = 10_000


def _prefix_regex(template: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(".*" if m.group(2) == "path" else "[^/]+")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


def _path_format(route: Any) -> str | None:
    fmt = getattr(route, "path_format", None)
    if isinstance(fmt, str):
        return fmt
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


class _Index:
    """Every routable object under a router, with the full template(s) it answers to."""

    def __init__(self) -> None:
        # id(obj) -> (obj, [(template, mount prefix template)]); the obj keeps the id from reuse.
        self.entries: dict[int, tuple[Any, list[tuple[str | None, str]]]] = {}

    def add(self, obj: Any, template: str | None, prefix: str) -> None:
        entry = self.entries.setdefault(id(obj), (obj, []))
        if (template, prefix) not in entry[1]:
            entry[1].append((template, prefix))

    def walk(self, routes: Iterable[Any], prefix: str, depth: int = 0) -> None:
        if depth > 32:  # a router that contains itself: stop rather than recurse forever
            return
        for route in routes:
            contexts = getattr(route, "effective_route_contexts", None)
            if callable(contexts):  # FastAPI _IncludedRouter
                for ctx in contexts():
                    self._walk_context(ctx, prefix, depth)
                continue
            fmt = _path_format(route)
            sub = getattr(route, "routes", None)
            if fmt is None:
                if sub:  # Host: no path of its own, the host is not a label
                    self.walk(sub, prefix, depth + 1)
                continue
            if sub and fmt.endswith(_MOUNT_SUFFIX):
                # A mount over a router: being the final route means nothing inside matched.
                self.add(route, None, prefix)
                self.walk(sub, prefix + fmt.removesuffix(_MOUNT_SUFFIX), depth + 1)
                continue
            self.add(route, prefix + fmt, prefix)
            endpoint = getattr(route, "endpoint", None)
            if endpoint is not None:
                self.add(endpoint, prefix + fmt, prefix)

    def _walk_context(self, ctx: Any, prefix: str, depth: int) -> None:
        original = getattr(ctx, "original_route", None)
        fmt = _path_format(getattr(ctx, "starlette_route", None)) or _path_format(ctx)
        if fmt is None:
            return
        sub = getattr(original, "routes", None)
        if sub and fmt.endswith(_MOUNT_SUFFIX):
            self.add(ctx, None, prefix)
            self.walk(sub, prefix + fmt.removesuffix(_MOUNT_SUFFIX), depth + 1)
        else:
            self.add(ctx, prefix + fmt, prefix)


class RouteResolver:
    """Callable ``scope -> route label`` for Starlette and FastAPI apps, and any router that sets
    ``scope["route"]`` with a ``path_format``/``path``. ``UNMATCHED`` when no route matched.
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[Any, str | None]] = {}
        self._ambiguous: dict[tuple[int, str], str] = {}
        self._candidates: dict[int, tuple[Any, list[tuple[str | None, re.Pattern[str]]]]] = {}

    def __call__(self, scope: Scope) -> str:
        return self.resolve(scope)

    def resolve(self, scope: Scope) -> str:
        """The route label for a scope the router has finished with."""
        key = scope.get("route")
        if key is None:
            key = scope.get("endpoint")
            if key is None:
                return UNMATCHED
        fastapi = scope.get("fastapi")
        if fastapi:
            ctx = fastapi.get("effective_route_context")
            if ctx is not None and getattr(ctx, "original_route", None) is key:
                key = ctx
        entry = self._cache.get(id(key))
        if entry is not None and entry[0] is key:
            return entry[1] if entry[1] is not None else UNMATCHED
        return self._slow(key, scope)

    def _slow(self, key: Any, scope: Scope) -> str:
        found = self._candidates.get(id(key))
        if found is None or found[0] is not key:
            self._reindex(scope)
            found = self._candidates.get(id(key))
        if found is None or found[0] is not key:
            return self._unknown(key, scope)
        options = found[1]
        if len(options) == 1:
            self._remember(key, options[0][0])
            return options[0][0] if options[0][0] is not None else UNMATCHED
        return self._disambiguate(key, options, scope)

    def _reindex(self, scope: Scope) -> None:
        # Runs once per object not yet indexed (the result is cached either way), so routes added
        # after the first request are found too, and the walk never repeats per request.
        routes = getattr(scope.get("router"), "routes", None)
        if routes is None:
            return
        index = _Index()
        index.walk(routes, "")
        self._candidates = {
            ident: (obj, [(template, _prefix_regex(prefix)) for template, prefix in options])
            for ident, (obj, options) in index.entries.items()
        }

    def _disambiguate(
        self, key: Any, options: list[tuple[str | None, re.Pattern[str]]], scope: Scope
    ) -> str:
        actual = _actual_prefix(scope)
        cache_key = (id(key), actual)
        hit = self._ambiguous.get(cache_key)
        if hit is not None:
            return hit
        chosen = next(
            (t for t, rx in options if rx.fullmatch(actual)),
            options[0][0],
        )
        label = chosen if chosen is not None else UNMATCHED
        if len(self._ambiguous) < _MAX_AMBIGUOUS:
            self._ambiguous[cache_key] = label
        return label

    def _unknown(self, key: Any, scope: Scope) -> str:
        """An object the walk did not find (a custom router): use its own template, if any."""
        fmt = _path_format(key)
        if fmt is None or not fmt.startswith("/") or _actual_prefix(scope):
            # No template, or it sits under a mount we cannot name without the raw path.
            self._remember(key, None)
            return UNMATCHED
        self._remember(key, fmt)
        return fmt

    def _remember(self, key: Any, template: str | None) -> None:
        if len(self._cache) < MAX_CACHED_ROUTES:
            self._cache[id(key)] = (key, template)


def _actual_prefix(scope: Scope) -> str:
    root = scope.get("root_path", "") or ""
    app_root = scope.get("app_root_path", root) or ""
    return root[len(app_root) :] if root.startswith(app_root) else root


__all__ = ["RouteResolver"]

"""Route templates from what the router already computed.

The router leaves its choice in the scope, in one of two forms:

- the matched **route object**: ``scope["route"]``, set by Starlette's router from 1.7.0 on and by
  FastAPI's ``APIRoute`` on every version. Current FastAPI keeps ``include_router`` prefixes out of
  the route object and records the included copy as ``scope["fastapi"]["effective_route_context"]``
  instead, so reading ``route.path`` there drops the prefix (the bug OpenTelemetry's ASGI
  instrumentation has);
- only the matched **endpoint**: ``scope["endpoint"]``, the route's endpoint or a mount's app.
  That is all Starlette before 1.7.0 records, and all FastAPI's own router records for plain
  Starlette routes and mounts on every Starlette version. One endpoint often serves several routes
  (``instrument()``'s metrics routes, a generic handler, one ``StaticFiles`` mounted twice), so the
  endpoint alone does not name the route.

Mounts leave only the *actual* matched prefix in ``root_path``.

The resolver maps each object to the route(s) it sits behind with one walk of the router tree, done
the first time an object is seen. A route object behind one template is a constant label: a few
``scope.get`` calls and one dict lookup per request. Otherwise (an endpoint, or an object reachable
under several prefixes) the candidates are compiled once into a matcher that asks what the router
asked: the mount prefix, the route's own compiled pattern, its methods, its host. Only the routes
whose path starts with the request's first segment are tried, so the cost does not grow with the
number of routes sharing the endpoint. There is no version switch: the same code reads whichever
form the installed Starlette and FastAPI record, and an object it cannot place is ``UNMATCHED``,
never another route's template.

"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from .._labels import UNMATCHED
from .._types import Scope

_MOUNT_SUFFIX = "/{path}"
_PARAM = re.compile(r"\{([^}:]+)(?::([^}]+))?\}")
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
    if isinstance(fmt, str) and fmt:
        return fmt
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else None


class _Option(NamedTuple):
    """One place an object sits in the router tree."""

    template: str | None  # the full label; None: a mount over a router, nothing inside matched
    prefix: str  # template of the mount prefix the router leaves in root_path
    route: Any  # whose pattern and methods the router matched; None: the object is the route
    hosts: tuple[Any, ...]  # Host routes it sits under


class _Index:
    """Every routable object under a router, with the place(s) it answers to."""

    def __init__(self) -> None:
        # id(obj) -> (obj, options in the router's order); the obj keeps the id from reuse.
        self.entries: dict[int, tuple[Any, list[_Option]]] = {}

    def add(self, obj: Any, option: _Option) -> None:
        self.entries.setdefault(id(obj), (obj, []))[1].append(option)

    def walk(
        self, routes: Iterable[Any], prefix: str, hosts: tuple[Any, ...] = (), depth: int = 0
    ) -> None:
        if depth > 32:  # a router that contains itself: stop rather than recurse forever
            return
        for route in routes:
            contexts = getattr(route, "effective_route_contexts", None)
            if callable(contexts):  # FastAPI _IncludedRouter
                for ctx in contexts():
                    original = getattr(ctx, "original_route", None)
                    actual = getattr(ctx, "starlette_route", None) or ctx
                    self._route(
                        ctx, actual, getattr(original, "routes", None), prefix, hosts, depth
                    )
                continue
            self._route(route, route, getattr(route, "routes", None), prefix, hosts, depth)

    def _route(
        self, key: Any, route: Any, sub: Any, prefix: str, hosts: tuple[Any, ...], depth: int
    ) -> None:
        """Index ``route``, which the router records as ``key`` or as its endpoint / app."""
        fmt = _path_format(route)
        if fmt is None:
            if sub:  # Host: no path of its own, the host is not a label
                inner = (*hosts, route)
                # Being the final route (or its app the endpoint) means nothing inside matched.
                self.add(key, _Option(None, prefix, None, inner))
                self.add(getattr(route, "app", None), _Option(None, prefix, None, inner))
                self.walk(sub, prefix, inner, depth + 1)
            return
        if not hasattr(route, "endpoint") and fmt.endswith(_MOUNT_SUFFIX):
            # A mount: the router moves its matched path into root_path and records its app.
            own = prefix + fmt.removesuffix(_MOUNT_SUFFIX)
            # Over a router, being the final route means nothing inside matched.
            option = _Option(None if sub else prefix + fmt, own, None, hosts)
            self.add(key, option)
            self.add(getattr(route, "app", None), option)
            if sub:
                self.walk(sub, own, hosts, depth + 1)
            return
        self.add(key, _Option(prefix + fmt, prefix, None, hosts))
        self.add(getattr(route, "endpoint", None), _Option(prefix + fmt, prefix, route, hosts))


class _Candidate(NamedTuple):
    label: str
    prefix: str | re.Pattern[str]  # the mount prefix: literal, or a pattern when it has params
    pattern: re.Pattern[str] | None  # the route's own pattern over the route path
    methods: frozenset[str] | None
    hosts: tuple[Any, ...]


class _Matcher:
    """Picks, among the places one object sits, the one the router chose for this request: the
    first whose mount prefix, host, pattern and method all match, as the router itself does (else
    the first that matches all but the method: a 405).

    Candidates are bucketed by the literal first segment of their own path, so a request tries only
    the routes it could match (one endpoint behind 200 routes costs what one behind two does).
    """

    __slots__ = ("_any", "_buckets")

    def __init__(self, options: list[_Option]) -> None:
        hosts = {tuple(map(id, option.hosts)) for option in options}
        # Hosts only tell candidates apart when they differ: the router has already checked them.
        candidates = [_candidate(option, len(hosts) > 1) for option in options]
        segments = [_first_segment(option.route) for option in options]
        dynamic: list[int] = []
        literal: dict[str, list[int]] = {}
        for i, segment in enumerate(segments):
            if segment is None:
                dynamic.append(i)
            else:
                literal.setdefault(segment, []).append(i)
        # Per literal first segment: its routes and the dynamic ones, in the router's order.
        self._buckets = {
            segment: tuple(candidates[i] for i in sorted(indices + dynamic))
            for segment, indices in literal.items()
        }
        self._any = tuple(candidates[i] for i in dynamic)

    def match(self, scope: Scope) -> str | None:
        """The label, or ``None`` when no candidate matches (the route is not indexed)."""
        actual = _actual_prefix(scope)
        path = _route_path(scope)
        end = path.find("/", 1)
        candidates = self._buckets.get(path[1:end] if end > 0 else path[1:], self._any)
        method = scope.get("method")
        partial: str | None = None
        for label, prefix, pattern, methods, hosts in candidates:
            if isinstance(prefix, str):
                if prefix != actual:
                    continue
            elif not prefix.fullmatch(actual):
                continue
            if pattern is not None and not pattern.match(path):
                continue
            if hosts and not all(_host_matches(host, scope) for host in hosts):
                continue
            if methods is None or method in methods:
                return label
            if partial is None:
                partial = label
        return partial


def _candidate(option: _Option, check_hosts: bool) -> _Candidate:
    pattern = getattr(option.route, "path_regex", None)
    methods = getattr(option.route, "methods", None)
    prefix: str | re.Pattern[str] = option.prefix
    if _PARAM.search(option.prefix):
        prefix = _prefix_regex(option.prefix)
    return _Candidate(
        option.template if option.template is not None else UNMATCHED,
        prefix,
        pattern if isinstance(pattern, re.Pattern) else None,
        frozenset(methods) if methods else None,
        option.hosts if check_hosts else (),
    )


def _first_segment(route: Any) -> str | None:
    """The literal first path segment every match of ``route`` starts with; ``None``: any."""
    fmt = getattr(route, "path_format", None)
    if route is None or not isinstance(fmt, str) or not fmt.startswith("/"):
        return None
    end = fmt.find("/", 1)
    segment = fmt[1:end] if end > 0 else fmt[1:]
    return None if "{" in segment else segment


def _host_matches(host: Any, scope: Scope) -> bool:
    # The router asked the same Host the same question for this scope; Match.NONE is 0.
    return bool(host.matches(scope)[0].value)


class RouteResolver:
    """Callable ``scope -> route label`` for Starlette and FastAPI apps, and any router that sets
    ``scope["route"]`` with a ``path_format``/``path``. ``UNMATCHED`` when no route matched.
    """

    def __init__(self) -> None:
        # id(key) -> (key, constant label or matcher); the key keeps its id from reuse.
        self._cache: dict[int, tuple[Any, str | _Matcher]] = {}
        # The subset of _cache whose value is a template (not a matcher, not unmatched): resolve()
        # answers these without a further call.
        self._constant: dict[int, tuple[Any, str]] = {}
        self._index: dict[int, tuple[Any, list[_Option]]] = {}
        # Keys that already caused a walk when the index had no place for a request of theirs.
        self._rewalked: dict[int, Any] = {}

    def __call__(self, scope: Scope) -> str:
        return self.resolve(scope)

    def resolve(self, scope: Scope) -> str:
        """The route label for a scope the router has finished with."""
        key = scope.get("route")
        if key is not None:
            fastapi = scope.get("fastapi")
            if fastapi:
                ctx = fastapi.get("effective_route_context")
                if ctx is not None and getattr(ctx, "original_route", None) is key:
                    key = ctx
            # The common case, inline: a route object already known to be one template.
            entry = self._constant.get(id(key))
            if entry is not None and entry[0] is key:
                return entry[1]
        return self._resolve(scope)

    def _resolve(self, scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        key = scope.get("route")
        if key is None:
            if endpoint is None:
                return UNMATCHED
            key = endpoint
        fastapi = scope.get("fastapi")
        if fastapi:
            ctx = fastapi.get("effective_route_context")
            if ctx is not None and getattr(ctx, "original_route", None) is key:
                key = ctx
        label = self._label(key, scope)
        if label == UNMATCHED and endpoint is not None and key is not endpoint:
            # scope["route"] names a mount over a router, and a router inside that does not set
            # scope["route"] (FastAPI's, or an older Starlette's) chose a route: its endpoint.
            return self._label(endpoint, scope)
        return label

    def _label(self, key: Any, scope: Scope) -> str:
        entry = self._cache.get(id(key))
        if entry is not None and entry[0] is key:
            found = entry[1]
            if isinstance(found, str):
                return found
            label = found.match(scope)
            return label if label is not None else self._miss(key, scope)
        found_in_index = self._index.get(id(key))
        if found_in_index is None or found_in_index[0] is not key:
            self._reindex(scope)
        return self._place(key, scope)

    def _place(self, key: Any, scope: Scope) -> str:
        """Compile what the index knows of ``key`` into a label or a matcher, and use it."""
        found = self._index.get(id(key))
        if found is None or found[0] is not key:
            return self._unknown(key, scope)
        value = _compile(found[1])
        self._remember(key, value)
        if isinstance(value, str):
            return value
        label = value.match(scope)
        return label if label is not None else self._miss(key, scope)

    def _miss(self, key: Any, scope: Scope) -> str:
        """No indexed place of ``key`` matches: walk again once per key (routes added later), then
        unmatched (a route behind an app that hides its routes cannot be named)."""
        if self._rewalked.get(id(key)) is key or len(self._rewalked) >= MAX_CACHED_ROUTES:
            return UNMATCHED
        self._rewalked[id(key)] = key
        self._reindex(scope)
        return self._place(key, scope)

    def _reindex(self, scope: Scope) -> None:
        # Runs once per object not yet indexed (the result is cached either way), so routes added
        # after the first request are found too, and the walk never repeats per request.
        routes = getattr(scope.get("router"), "routes", None)
        if routes is None:
            return
        index = _Index()
        index.walk(routes, "")
        self._index = index.entries

    def _unknown(self, key: Any, scope: Scope) -> str:
        """An object the walk did not find (a custom router): use its own template, if any."""
        fmt = _path_format(key)
        if fmt is None or not fmt.startswith("/") or _actual_prefix(scope):
            # No template, or it sits under a mount we cannot name without the raw path.
            self._remember(key, UNMATCHED)
            return UNMATCHED
        self._remember(key, fmt)
        return fmt

    def _remember(self, key: Any, value: str | _Matcher) -> None:
        if len(self._cache) < MAX_CACHED_ROUTES:
            self._cache[id(key)] = (key, value)
            if isinstance(value, str) and value != UNMATCHED:
                self._constant[id(key)] = (key, value)


def _compile(options: list[_Option]) -> str | _Matcher:
    """A constant label when the object is the route itself, under one template; else a matcher."""
    templates = {option.template for option in options}
    if templates == {None}:
        return UNMATCHED
    template = options[0].template
    if len(templates) == 1 and template is not None and all(o.route is None for o in options):
        return template
    return _Matcher(options)


def _actual_prefix(scope: Scope) -> str:
    root = scope.get("root_path", "") or ""
    app_root = scope.get("app_root_path", root) or ""
    return root[len(app_root) :] if root.startswith(app_root) else root


def app_path(scope: Scope, path: str) -> str:
    """``path`` as the route labels see it: relative to the server's ``root_path`` (a proxy prefix
    is not part of it), with the prefixes of the mounts it went through.

    Starlette's ``Mount`` keeps the server's root in ``app_root_path``; where no mount set it, the
    ``root_path`` is the server's. A ``root_path`` the path does not start with (a server that
    leaves it out of ``path``) is not stripped.
    """
    root = scope.get("app_root_path")
    if root is None:
        root = scope.get("root_path")
    if root and isinstance(root, str) and path.startswith(root):
        rest = path[len(root) :]
        if not rest:
            return "/"
        if rest[0] == "/":
            return rest
    return path


def _route_path(scope: Scope) -> str:
    """The path the innermost router matched, as Starlette's ``get_route_path`` computes it."""
    path: str = scope.get("path", "") or ""
    root = scope.get("root_path", "") or ""
    # The rest after root_path when root_path is a whole-segment prefix ("" when it is all).
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path


__all__ = ["RouteResolver", "app_path"]

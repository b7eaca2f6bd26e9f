"""PerfMiddleware: pure-ASGI HTTP timing that costs a few microseconds and never breaks the app."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from time import perf_counter
from typing import Any

from .._checks import ERR_REGISTRY
from .._histogram import check_buckets
from .._labels import (
    METHOD_LABELS,
    OTHER_METHOD,
    OTHER_STATUS,
    STATUS_CLASS_LABELS,
    STATUS_LABELS,
    UNMATCHED,
)
from .._types import OWN_ENDPOINT_KEY, ASGIApp, Message, Receive, Scope, Send
from ..catalogue import LATENCY_BUCKETS
from ..registry import PerfRegistry, RequestHook
from ._routing import RouteResolver
from ._stats import HTTP_STATS, HttpStats, SharedHttpStats

#: Status recorded when the client went away before the response completed (nginx's convention).
CLIENT_CLOSED_REQUEST = 499

#: Scope key: the registries already recording this request, so a middleware further in on one
#: of them passes it through.
RECORDING_KEY = "asgi_perf.recording"

#: How far down the ``.app`` chain a new middleware looks for one already wrapped.
_CHAIN_DEPTH = 64

logger = logging.getLogger("asgi_perf.http")

WARN_DUPLICATE = (
    "PerfMiddleware is installed twice on one app (instrument() and/or add_middleware()); "
    "each request is recorded once, by the innermost one, and this one's options are ignored"
)
WARN_TWO_REGISTRIES = (
    "PerfMiddleware is installed twice on one app with two registries (instrument() and/or "
    "add_middleware()); each registry records every request once: pass the same registry= to "
    "both to keep one"
)
WARN_NESTED = (
    "a request reached a PerfMiddleware inside another one on the same registry (an app mounted "
    "in an app instrumented with its registry?); it is recorded once, by the outer one"
)

ERR_EXCLUDE_PATH = "exclude_paths entries must be strings starting with '/', got {!r}"
ERR_EXCLUDE_PATTERN = "exclude_patterns entry {!r} is not a valid regular expression: {}"
ERR_ROUTE_GETTER = "route_getter must be callable, got {!r}"

RouteGetter = Callable[[Scope], "str | None"]


class PerfMiddleware:
    """Times every HTTP request of the wrapped ASGI app into a :class:`PerfRegistry`.

    Duration runs to the last response body byte (background tasks excluded), TTFB to the response
    start; body sizes count the bytes actually received and sent. Labels are bounded: the route
    template (``__unmatched__`` when nothing matched), a sanitised method, the status (or its class
    with ``group_status=True``). An exception is recorded as 500 with its duration and re-raised
    unchanged; a client that disconnects before the response completes is recorded as 499.

    :param app: the ASGI application to wrap.
    :param registry: where to report; a fresh :class:`PerfRegistry` if omitted (read it back from
        ``middleware.registry``).
    :param exclude_paths: exact request paths not to record (e.g. ``"/healthz"``).
    :param exclude_patterns: regular expressions; a path that ``re.match``-es one is not recorded.
    :param group_status: label status classes (``2xx``) instead of codes.
    :param buckets: duration histogram bounds in seconds.
    :param ttfb_buckets: time-to-first-byte bounds in seconds (default: ``buckets``).
    :param route_getter: ``scope -> label | None`` for routers asgi-perf does not know; called after
        the app ran. ``None`` means unmatched. Its results are still capped per metric.
    :param record_own_endpoints: also record the requests the package's own metrics app serves
        (``/metrics`` and the operations endpoints); left out by default.

    Installed twice on one app, it records each request once: a middleware that wraps another
    one (found down the ``.app`` chain at construction) steps aside and logs a warning. One
    nested out of sight (an app mounted in another) passes through a request its registry is
    already recording, with a warning; on a registry of its own it records as usual.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        registry: PerfRegistry | None = None,
        exclude_paths: Iterable[str] = (),
        exclude_patterns: Iterable[str | re.Pattern[str]] = (),
        group_status: bool = False,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        ttfb_buckets: Sequence[float] | None = None,
        route_getter: RouteGetter | None = None,
        record_own_endpoints: bool = False,
    ) -> None:
        if registry is None:
            registry = PerfRegistry()
        if not isinstance(registry, PerfRegistry):
            raise ValueError(ERR_REGISTRY.format(registry))
        if isinstance(exclude_paths, str):
            exclude_paths = (exclude_paths,)
        paths = frozenset(exclude_paths)
        for path in paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(ERR_EXCLUDE_PATH.format(path))
        if isinstance(exclude_patterns, (str, re.Pattern)):
            exclude_patterns = (exclude_patterns,)
        compiled: list[re.Pattern[str]] = []
        for pattern in exclude_patterns:
            try:
                compiled.append(re.compile(pattern))
            except (re.error, TypeError) as exc:
                raise ValueError(ERR_EXCLUDE_PATTERN.format(pattern, exc)) from None
        if route_getter is not None and not callable(route_getter):
            raise ValueError(ERR_ROUTE_GETTER.format(route_getter))
        duration_b = check_buckets(buckets)
        ttfb_b = check_buckets(ttfb_buckets) if ttfb_buckets is not None else duration_b

        self.app = app
        self.registry = registry
        self._hooks = registry.request_hooks  # the list itself: later additions are seen
        self._exclude_paths = paths
        # One alternation, so an excluded-pattern check is a single C-level match per request.
        self._exclude_re = (
            re.compile("|".join(f"(?:{p.pattern})" for p in compiled)) if compiled else None
        )
        self._excluding = bool(paths or compiled)
        self._skip_own = not record_own_endpoints
        self._nested_reported = False
        self._mark = (registry,)  # built once: the common case stores it without allocating
        # A duplicate found now steps aside: it never touches the registry (so its buckets cannot
        # conflict with the recording one's) and "excludes" every path, at no cost per request.
        # Only on the same registry: one on another registry is that registry's only view of the
        # traffic (e.g. a default-registry add_middleware() under instrument()), so both record.
        inner = _wrapped_middleware(app)
        self._duplicate = inner is not None and inner.registry is registry
        if self._duplicate:
            logger.warning(WARN_DUPLICATE)
            self._excluding = True
        elif inner is not None:
            logger.warning(WARN_TWO_REGISTRIES)
        self._status_labels = _StatusLabels(STATUS_CLASS_LABELS if group_status else STATUS_LABELS)
        # A bound method, not the resolver object: calling an instance's __call__ costs more.
        self._route_getter: RouteGetter = route_getter or RouteResolver().resolve
        created = False

        def make() -> HttpStats:
            nonlocal created
            created = True
            # Decided once, here: the request path never asks which store it writes to.
            if registry.shared is not None:
                return SharedHttpStats(registry, duration_b, ttfb_b, registry.shared)
            return HttpStats(registry, duration_b, ttfb_b)

        if self._duplicate:
            return
        self._stats = registry.component(HTTP_STATS, make)
        self._record = self._stats.record
        self._in_progress = self._stats.in_progress
        if created:
            registry.register(self._stats)
        else:
            self._stats.check_buckets(duration_b, ttfb_b)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recording = scope.get(RECORDING_KEY)
        if recording is not None and self.registry in recording:
            self._pass_nested()
            await self.app(scope, receive, send)
            return
        if self._excluding and self._excluded(scope.get("path")):
            await self.app(scope, receive, send)
            return
        # Another registry further out records into itself: both count, each once.
        scope[RECORDING_KEY] = self._mark if recording is None else (*recording, self.registry)

        hooks = self._hooks
        hook_states = self._start_hooks(hooks) if hooks else None
        try:  # a subscript, not two .get() calls: the common case makes no method call
            method = METHOD_LABELS[scope["method"]]
        except KeyError:  # no method in the scope, or not a standard one
            method = OTHER_METHOD
        in_progress = self._in_progress
        in_progress[method] += 1
        start = perf_counter()
        ex = _new(_Exchange)
        ex.registry = self.registry
        ex.server_receive = receive
        ex.server_send = send
        ex.status = 0
        ex.started = 0.0
        ex.ended = 0.0
        ex.request_bytes = 0
        ex.response_bytes = 0
        ex.disconnected = False
        try:
            await self.app(scope, ex.receive, ex.send)
        except BaseException as exc:
            in_progress[method] -= 1
            if hook_states is not None:
                self._finish_hooks(hook_states)
            if self._skip_own and OWN_ENDPOINT_KEY in scope:
                raise
            self._finish(scope, method, start, ex, exc)
            raise
        in_progress[method] -= 1
        if hook_states is not None:
            self._finish_hooks(hook_states)
        if self._skip_own and OWN_ENDPOINT_KEY in scope:
            return  # the package's own endpoint, set by the metrics app this request reached
        ended = ex.ended
        status = ex.status
        if ended and not ex.disconnected and status != 405:
            # The common case, recorded inline: a call to _finish costs as much as the
            # recording itself.
            started = ex.started
            try:
                self._record(
                    method,
                    self._route_getter(scope) or UNMATCHED,
                    self._status_labels[status],
                    ended - start,
                    started - start if started else None,
                    ex.request_bytes,
                    ex.response_bytes,
                )
            except Exception as exc:  # noqa: BLE001 - never let recording change the response
                self.registry.report_error("http", exc)
        else:
            self._finish(scope, method, start, ex, None)

    def _pass_nested(self) -> None:
        if not (self._nested_reported or self._duplicate):
            self._nested_reported = True
            logger.warning(WARN_NESTED)

    def _excluded(self, path: object) -> bool:
        if self._duplicate or path in self._exclude_paths:
            return True
        return (
            self._exclude_re is not None
            and isinstance(path, str)
            and self._exclude_re.match(path) is not None
        )

    def _start_hooks(self, hooks: list[RequestHook]) -> list[tuple[RequestHook, Any]]:
        states = []
        for hook in hooks:  # no await in this loop: a concurrent append cannot interleave
            try:
                states.append((hook, hook.request_started()))
            except Exception as exc:  # noqa: BLE001
                self.registry.report_error("http", exc)
        return states

    def _finish_hooks(self, states: list[tuple[RequestHook, Any]]) -> None:
        for hook, state in states:
            try:
                hook.request_finished(state)
            except Exception as exc:  # noqa: BLE001
                self.registry.report_error("http", exc)

    def _finish(
        self, scope: Scope, method: str, start: float, ex: _Exchange, error: BaseException | None
    ) -> None:
        """Record a request that did not end in the common way (error, disconnect, 405, ...)."""
        try:
            self._record_unusual(scope, method, start, ex, error)
        except Exception as exc:  # noqa: BLE001 - never let recording change the response
            self.registry.report_error("http", exc)

    def _record_unusual(
        self, scope: Scope, method: str, start: float, ex: _Exchange, error: BaseException | None
    ) -> None:
        response_ended = ex.ended
        status = ex.status
        duration = (response_ended or perf_counter()) - start
        if ex.disconnected or (isinstance(error, asyncio.CancelledError) and not response_ended):
            status = CLIENT_CLOSED_REQUEST
        elif not response_ended and (error is not None or not status):
            status = 500
        # 405: a method the route does not take is not a match (and never the raw path).
        route = UNMATCHED if status == 405 else self._route_getter(scope) or UNMATCHED
        status_label = self._status_labels[status]
        self._stats.record(
            method,
            route,
            status_label,
            duration,
            ex.started - start if ex.started else None,
            ex.request_bytes,
            ex.response_bytes,
        )
        if error is not None and not isinstance(error, asyncio.CancelledError):
            self._stats.record_exception(method, route, type(error).__name__)


class _StatusLabels(dict[object, str]):
    """``status -> label``, :data:`OTHER_STATUS` for anything else: a subscript per request
    rather than a ``.get()`` call."""

    __slots__ = ()

    def __missing__(self, key: object) -> str:
        return OTHER_STATUS


class _Exchange:
    """One request in flight: what the server's messages said, and the app's ``receive`` and
    ``send`` as this object's bound methods.

    Two closures over the same state cost two function objects, their cell tuples and a cell per
    variable, every request; this is one object with slots and two bound methods. Fewer objects
    also means less for the cyclic collector to trace when a request's frames end up in a
    reference cycle (a task group cancelled around a streamed response, on every ASGI 2.3 server).
    """

    __slots__ = (
        "disconnected",
        "ended",
        "registry",
        "request_bytes",
        "response_bytes",
        "server_receive",
        "server_send",
        "started",
        "status",
    )

    registry: PerfRegistry
    server_receive: Receive
    server_send: Send
    status: int
    started: float  # perf_counter() at http.response.start; 0.0 before
    ended: float  # perf_counter() at the last body byte (or pathsend); 0.0 before
    request_bytes: int
    response_bytes: int
    disconnected: bool  # http.disconnect received before the last body byte

    async def receive(self) -> Message:
        message = await self.server_receive()
        try:
            kind = message["type"]
            if kind == "http.request":
                self.request_bytes += len(message.get("body", b""))
            elif kind == "http.disconnect" and not self.ended:
                # Gone before the last byte: servers drop later sends silently, so a
                # response the app "completes" afterwards never reached the client.
                self.disconnected = True
        except Exception as exc:  # noqa: BLE001 - a malformed message is the app's business
            self.registry.report_error("http", exc)
        return message

    async def send(self, message: Message) -> None:
        await self.server_send(message)
        try:
            kind = message["type"]
            if kind == "http.response.body":
                self.response_bytes += len(message.get("body", b""))
                if not message.get("more_body", False):
                    self.ended = perf_counter()
            elif kind == "http.response.start":
                self.started = perf_counter()
                self.status = message["status"]
            elif kind == "http.response.pathsend":
                self.ended = perf_counter()
        except Exception as exc:  # noqa: BLE001
            self.registry.report_error("http", exc)


#: Allocates an _Exchange without running an ``__init__``: the middleware sets every slot itself,
#: which costs a third of what a class call with an ``__init__`` does.
_new = object.__new__


def _wrapped_middleware(app: object) -> PerfMiddleware | None:
    """The PerfMiddleware ``app`` is or wraps, following the ``.app`` attribute middleware keep."""
    for _ in range(_CHAIN_DEPTH):
        if isinstance(app, PerfMiddleware):
            return app
        try:
            app = getattr(app, "app", None)
        except Exception:  # noqa: BLE001 - a property that raises is simply not a chain link
            return None
        if app is None:
            return None
    return None


__all__ = ["CLIENT_CLOSED_REQUEST", "PerfMiddleware", "RouteGetter"]

"""PerfMiddleware: pure-ASGI HTTP timing that costs a few microseconds and never breaks the app."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from time import perf_counter
from typing import Any

from .._checks import ERR_REGISTRY
from .._histogram import check_buckets
from .._labels import (
    OTHER_STATUS,
    STATUS_CLASS_LABELS,
    STATUS_LABELS,
    UNMATCHED,
)
from .._types import OWN_ENDPOINT_KEY, ASGIApp, Message, Receive, Scope, Send
from ..catalogue import LATENCY_BUCKETS
from ..registry import PerfRegistry, RequestHook
from ._features import (
    DEFAULT_CALLBACK_TIMEOUT,
    DEFAULT_LABEL_VALUES,
    DISABLE_ENV,
    ERR_TIMEOUT,
    LabelCallable,
    LabelValues,
    RequestHookCallable,
    RequestInfo,
    check_limit,
    check_positive,
    constant_labels,
    disabled_by_env,
    hook_callables,
    label_callables,
    settle,
    skip_method_labels,
)
from ._routing import RouteResolver, app_path
from ._stats import (
    HTTP_STATS,
    ExemplarHttpStats,
    ExtraLabels,
    HighrHttpStats,
    HttpStats,
    NativeHighrHttpStats,
    NativeHttpStats,
    SharedHighrHttpStats,
    SharedHttpStats,
    SharedNativeHighrHttpStats,
    SharedNativeHttpStats,
    keep_exemplars,
)

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
WARN_DISABLED = "{} is set: PerfMiddleware passes every request through unrecorded"
WARN_NESTED = (
    "a request reached a PerfMiddleware inside another one on the same registry (an app mounted "
    "in an app instrumented with its registry?); it is recorded once, by the outer one"
)

ERR_EXCLUDE_PATH = "exclude_paths entries must be strings starting with '/', got {!r}"
ERR_EXCLUDE_PATTERN = "exclude_patterns entry {!r} is not a valid regular expression: {}"
ERR_LABEL_COMPAT = (
    "label {!r} is one the registry's compat setting already exposes (a renamed or constant "
    "label); pick another name"
)
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
    :param exclude_paths: exact request paths not to record (e.g. ``"/healthz"``), matched against
        the path the route label describes: without a proxy prefix (``root_path``), with the prefix
        of the mounts the app sits under.
    :param exclude_patterns: regular expressions; a path that ``re.match``-es one is not recorded.
    :param group_status: label status classes (``2xx``) instead of codes (default: the
        registry's ``compat`` setting's, else off).
    :param buckets: duration histogram bounds in seconds (default: the registry's ``compat``
        setting's, else :data:`~asgi_perf.catalogue.LATENCY_BUCKETS`).
    :param ttfb_buckets: time-to-first-byte bounds in seconds (default: ``buckets``).
    :param route_getter: ``scope -> label | None`` for routers asgi-perf does not know; called after
        the app ran. ``None`` means unmatched. Its results are still capped per metric.
    :param record_own_endpoints: also record the requests the package's own metrics app serves
        (``/metrics`` and the operations endpoints); left out by default.
    :param labels: constant labels added to every HTTP series (``{"app_name": "shop"}``).
    :param label_from: ``{name: callable(scope) -> str}``, sync or async, called after the app ran;
        each label keeps its first ``label_values_limit`` distinct values, the rest (and faults)
        become ``__other__``.
    :param label_values_limit: the cap on distinct values per ``label_from`` label.
    :param skip_methods: methods not to record (``["OPTIONS", "HEAD"]``).
    :param drop_unmatched: do not record requests no route matched (``__unmatched__``).
    :param on_request: callables (sync or async) receiving a :class:`RequestInfo` after each
        recorded request; faults are counted, never raised.
    :param callback_timeout: seconds each async ``label_from`` callable or hook may take.
    :param disable_env: environment variable that, set to ``1``/``true``/``yes``/``on`` when the
        middleware is built, makes it pass every request through untouched (``None``: ignore).

    Installed twice on one app, it records each request once: a middleware that wraps another
    one (found down the ``.app`` chain at construction) steps aside and logs a warning. One
    nested out of sight (an app mounted in another) passes through a request its registry is
    already recording, with a warning; on a registry of its own it records as usual.
    """

    def __new__(cls, app: ASGIApp, **options: Any) -> PerfMiddleware:
        # Decided at construction: the features that need the request after the app ran (and an
        # await there) live in a subclass, so without them the request path is exactly the plain
        # one, not the plain one plus a test per request.
        featured = options.get("label_from") or options.get("drop_unmatched")
        if cls is PerfMiddleware and (featured or options.get("on_request")):
            return object.__new__(_FeaturedMiddleware)
        return object.__new__(cls)

    def __init__(
        self,
        app: ASGIApp,
        *,
        registry: PerfRegistry | None = None,
        exclude_paths: Iterable[str] = (),
        exclude_patterns: Iterable[str | re.Pattern[str]] = (),
        group_status: bool | None = None,
        buckets: Sequence[float] | None = None,
        ttfb_buckets: Sequence[float] | None = None,
        route_getter: RouteGetter | None = None,
        record_own_endpoints: bool = False,
        labels: Mapping[str, str] | None = None,
        label_from: Mapping[str, LabelCallable] | None = None,
        label_values_limit: int = DEFAULT_LABEL_VALUES,
        skip_methods: Iterable[str] = (),
        drop_unmatched: bool = False,
        on_request: Iterable[RequestHookCallable] | RequestHookCallable | None = None,
        callback_timeout: float = DEFAULT_CALLBACK_TIMEOUT,
        disable_env: str | None = DISABLE_ENV,
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
        compat = registry.compat
        if group_status is None:
            group_status = compat is not None and compat.group_status
        if buckets is None:
            buckets = compat.buckets if compat is not None and compat.buckets else LATENCY_BUCKETS
        highr = compat.highr_buckets if compat is not None else None
        duration_b = check_buckets(buckets)
        ttfb_b = check_buckets(ttfb_buckets) if ttfb_buckets is not None else duration_b
        constant = constant_labels(labels)
        dynamic = label_callables(label_from, constant)
        extra = ExtraLabels(constant, tuple(name for name, _ in dynamic))
        if compat is not None:
            # The compat setting adds and renames labels at render time: a clash would expose
            # one label twice.
            taken = {*compat.extra_labels, *compat.label_names.values()}
            for name in extra.names():
                if name in taken:
                    raise ValueError(ERR_LABEL_COMPAT.format(name))
        limit = check_limit(label_values_limit)
        self._timeout = check_positive(callback_timeout, ERR_TIMEOUT)
        self._skip_methods = skip_method_labels(skip_methods)
        self._on_request = hook_callables(on_request)
        self._drop_unmatched = bool(drop_unmatched)
        self._label_values = (
            LabelValues(registry, dynamic, limit, self._timeout) if dynamic else None
        )
        disabled = disabled_by_env(disable_env)

        self.app = app
        self.registry = registry
        self._hooks = registry.request_hooks  # the list itself: later additions are seen
        self._exclude_paths = paths
        # One alternation, so an excluded-pattern check is a single C-level match per request.
        self._exclude_re = (
            re.compile("|".join(f"(?:{p.pattern})" for p in compiled)) if compiled else None
        )
        self._excluding = bool(paths or compiled or self._skip_methods)
        self._skip_own = not record_own_endpoints
        self._nested_reported = False
        self._mark = (registry,)  # built once: the common case stores it without allocating
        # A duplicate found now steps aside: it never touches the registry (so its buckets cannot
        # conflict with the recording one's) and "excludes" every path, at no cost per request.
        # Only on the same registry: one on another registry is that registry's only view of the
        # traffic (e.g. a default-registry add_middleware() under instrument()), so both record.
        inner = _wrapped_middleware(app)
        self._duplicate = disabled or (inner is not None and inner.registry is registry)
        if disabled:
            # Switched off: step aside exactly as a duplicate does, touching nothing.
            logger.warning(WARN_DISABLED.format(disable_env))
            self._excluding = True
        elif self._duplicate:
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
            source = registry.exemplar_source
            if registry.shared is not None and registry.native is not None:
                if highr:
                    stats: HttpStats = SharedNativeHighrHttpStats(
                        registry, duration_b, ttfb_b, registry.shared, registry.native, highr, extra
                    )
                else:
                    stats = SharedNativeHttpStats(
                        registry, duration_b, ttfb_b, registry.shared, registry.native, extra
                    )
            elif registry.shared is not None:
                if highr:
                    stats = SharedHighrHttpStats(
                        registry, duration_b, ttfb_b, registry.shared, highr, extra
                    )
                else:
                    stats = SharedHttpStats(registry, duration_b, ttfb_b, registry.shared, extra)
            elif registry.native is not None:
                if highr:
                    stats = NativeHighrHttpStats(
                        registry, duration_b, ttfb_b, registry.native, highr, extra
                    )
                else:
                    stats = NativeHttpStats(registry, duration_b, ttfb_b, registry.native, extra)
            elif highr:
                stats = HighrHttpStats(registry, duration_b, ttfb_b, highr, extra)
            elif source is not None:
                return ExemplarHttpStats(registry, duration_b, ttfb_b, extra, source)
            else:
                stats = HttpStats(registry, duration_b, ttfb_b, extra)
            return stats if source is None else keep_exemplars(stats, source)

        if self._duplicate:
            return
        self._stats = registry.component(HTTP_STATS, make)
        self._record = self._stats.record
        self._flights = self._stats.flights
        self._other_flight = self._stats.other_flight
        if created:
            registry.register(self._stats)
        else:
            self._stats.check_buckets(duration_b, ttfb_b)
            self._stats.check_labels(extra)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recording = scope.get(RECORDING_KEY)
        if recording is not None and self.registry in recording:
            self._pass_nested()
            await self.app(scope, receive, send)
            return
        if self._excluding and self._excluded(scope):
            await self.app(scope, receive, send)
            return
        # Another registry further out records into itself: both count, each once.
        scope[RECORDING_KEY] = self._mark if recording is None else (*recording, self.registry)

        hooks = self._hooks
        hook_states = self._start_hooks(hooks) if hooks else None
        try:  # a subscript, not two .get() calls: the common case makes no method call
            flight = self._flights[scope["method"]]
        except (KeyError, TypeError):  # no method in the scope, not a standard one, unhashable
            flight = self._other_flight
        flight.count += 1
        method = flight.method
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
            flight.count -= 1
            if hook_states is not None:
                waiting = self._finish_hooks(hook_states)
                if waiting:
                    await self._settle_hooks(waiting, isinstance(exc, asyncio.CancelledError))
            if self._skip_own and OWN_ENDPOINT_KEY in scope:
                raise
            self._finish(scope, method, start, ex, exc)
            raise
        flight.count -= 1
        if hook_states is not None:
            waiting = self._finish_hooks(hook_states)
            if waiting:
                await self._settle_hooks(waiting, False)
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

    def _excluded(self, scope: Scope) -> bool:
        if self._duplicate or scope.get("method") in self._skip_methods:
            return True
        path = scope.get("path")
        if not isinstance(path, str):
            return path in self._exclude_paths
        # The path the route label describes: the same request is excluded behind any proxy prefix
        # (no call at all in the common case, an app served at the server's root).
        if scope.get("root_path") or scope.get("app_root_path"):
            path = app_path(scope, path)
        if path in self._exclude_paths:
            return True
        return self._exclude_re is not None and self._exclude_re.match(path) is not None

    def _start_hooks(self, hooks: list[RequestHook]) -> list[tuple[RequestHook, Any]]:
        states = []
        for hook in hooks:  # no await in this loop: a concurrent append cannot interleave
            try:
                states.append((hook, hook.request_started()))
            except Exception as exc:  # noqa: BLE001
                self.registry.report_error("http", exc)
        return states

    def _finish_hooks(self, states: list[tuple[RequestHook, Any]]) -> list[Awaitable[Any]]:
        """Call every hook's ``request_finished``; return the awaitables the async ones gave."""
        waiting: list[Awaitable[Any]] = []
        for hook, state in states:
            try:
                result = hook.request_finished(state)
                if result is not None:
                    waiting.append(result)
            except Exception as exc:  # noqa: BLE001
                self.registry.report_error("http", exc)
        return waiting

    async def _settle_hooks(self, waiting: list[Awaitable[Any]], cancelled: bool) -> None:
        for result in waiting:
            await settle(self.registry, "http", result, self._timeout, cancelled)

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


class _Pending:
    """What the plain path would have recorded for one request, for the featured path to finish."""

    __slots__ = ("args", "exception")

    def __init__(self) -> None:
        self.args: tuple[str, str, str, float, float | None, int, int] | None = None
        self.exception: str | None = None


#: The request being recorded by a featured middleware, in the request's own context.
_PENDING: contextvars.ContextVar[_Pending] = contextvars.ContextVar("asgi_perf.http.pending")


class _Capture:
    """Stands in for the registry's HTTP series in a featured middleware: the plain path records
    into it, and it keeps the values for the featured path to label, filter and hand to hooks."""

    __slots__ = ("stats",)

    def __init__(self, stats: HttpStats) -> None:
        self.stats = stats

    def record(
        self,
        method: str,
        route: str,
        status: str,
        duration: float,
        ttfb: float | None,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        _PENDING.get().args = (
            method,
            route,
            status,
            duration,
            ttfb,
            request_bytes,
            response_bytes,
        )

    def record_exception(self, method: str, route: str, exception: str) -> None:
        _PENDING.get().exception = exception


class _FeaturedMiddleware(PerfMiddleware):
    """:class:`PerfMiddleware` with ``label_from``, ``drop_unmatched`` or ``on_request``: it times
    the request on the plain path, then labels, filters and reports it once the app has ended
    (the response is complete by then, so an async callable never delays it)."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        super().__init__(app, **options)
        if not self._duplicate:
            self._series: HttpStats = self._stats
            self._stats = _Capture(self._stats)  # type: ignore[assignment]
            self._record = self._stats.record
            self._label_names = self._series.labels.names()
            self._constant_values = tuple(value for _, value in self._series.labels.constant)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._duplicate:
            await self.app(scope, receive, send)
            return
        pending = _Pending()
        token = _PENDING.set(pending)
        status_code: int | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message.get("type") == "http.response.start":
                status_code = message.get("status")
            await send(message)

        cancelled = False
        try:
            await PerfMiddleware.__call__(self, scope, receive, send_wrapper)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            _PENDING.reset(token)
            if pending.args is not None:
                await self._complete(scope, pending, status_code, cancelled)

    async def _complete(
        self, scope: Scope, pending: _Pending, status_code: int | None, cancelled: bool
    ) -> None:
        assert pending.args is not None
        method, route, status, duration, ttfb, request_bytes, response_bytes = pending.args
        series = self._series
        recorded = not (self._drop_unmatched and route == UNMATCHED)
        values: tuple[str, ...] = ()
        if recorded and self._label_values is not None:
            values = await self._label_values(scope, cancelled)
        try:
            if recorded:
                key = series.series_key(route, values) if values else route
                series.record(method, key, status, duration, ttfb, request_bytes, response_bytes)
                if pending.exception is not None:
                    series.record_exception(method, key, pending.exception)
        except Exception as exc:  # noqa: BLE001 - never let recording change the response
            self.registry.report_error("http", exc)
        if not self._on_request:
            return
        info = RequestInfo(
            method=method,
            route=route,
            status=status,
            status_code=status_code if isinstance(status_code, int) else None,
            duration=duration,
            ttfb=ttfb,
            request_bytes=request_bytes,
            response_bytes=response_bytes,
            exception=pending.exception,
            labels=dict(zip(self._label_names, (*self._constant_values, *values), strict=False)),
            scope=scope,
            recorded=recorded,
        )
        for hook in self._on_request:
            try:
                result = hook(info)
            except Exception as exc:  # noqa: BLE001 - a hook's fault never reaches the app
                self.registry.report_error("http_hooks", exc)
                continue
            if result is not None:
                await settle(self.registry, "http_hooks", result, self._timeout, cancelled)


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

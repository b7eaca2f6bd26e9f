"""The middleware's optional features: constant and per-request labels, hooks, method skips, the
environment switch. Everything is validated and resolved here, at construction; a feature that is
off leaves the request path exactly as it is without it.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._labels import OTHER, STANDARD_METHODS, NameLimiter
from .._types import Scope
from ..registry import PerfRegistry

#: The environment variable that switches asgi-perf's HTTP instrumentation off, by default.
DISABLE_ENV = "ASGI_PERF_DISABLED"
_ENV_ON = frozenset({"1", "true", "yes", "on"})
_ENV_OFF = frozenset({"", "0", "false", "no", "off"})

#: Labels asgi-perf sets itself on HTTP series (and the ones Prometheus reserves).
RESERVED_LABELS = frozenset({"method", "route", "status", "exception", "le", "quantile", "job"})
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
#: Default cap on the distinct values of one ``label_from`` label.
DEFAULT_LABEL_VALUES = 100
#: Longest value a ``label_from`` callable may return (longer ones become ``__other__``).
MAX_LABEL_VALUE_LENGTH = 120
#: Default bound, in seconds, on each async label callable or hook.
DEFAULT_CALLBACK_TIMEOUT = 1.0

ERR_LABEL_NAME = "label names must match [a-zA-Z_][a-zA-Z0-9_]* and not start with '__', got {!r}"
ERR_LABEL_RESERVED = (
    "label {!r} is one asgi-perf sets itself (method, route, status, exception) or Prometheus "
    "reserves (le, quantile, job); pick another name"
)
ERR_LABEL_TWICE = "label {!r} is given in both labels and label_from"
ERR_LABEL_VALUE = "labels values must be strings, got {!r} for label {!r}"
ERR_LABEL_CALLABLE = "label_from values must be callables taking the ASGI scope, got {!r} for {!r}"
ERR_LABEL_LIMIT = "label_values_limit must be an integer >= 1, got {!r}"
ERR_SKIP_METHOD = "skip_methods entries must be HTTP method names such as 'OPTIONS', got {!r}"
ERR_HOOK = "on_request entries must be callables taking a RequestInfo, got {!r}"
ERR_TIMEOUT = "callback_timeout must be a number of seconds > 0, got {!r}"
ERR_ENV_NAME = "disable_env must be an environment variable name or None, got {!r}"
ERR_ENV_VALUE = (
    "{}={!r} is not a switch value: 1, true, yes or on switch asgi-perf off; "
    "0, false, no, off or unset keep it on"
)
ERR_MAPPING = "{} must be a mapping of label name to {}, got {!r}"

LabelCallable = Callable[[Scope], "Awaitable[str | None] | str | None"]


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What an ``on_request`` hook receives once a recorded request has ended.

    ``status`` is the label recorded (``"200"``, ``"2xx"`` with ``group_status``, ``"499"`` for a
    client that went away, ``"500"`` for an exception); ``status_code`` is what the app sent in
    its response start (``None`` if it sent none). ``labels`` holds the extra labels (constant
    and ``label_from``) recorded with it; ``recorded`` is false for a request ``drop_unmatched``
    left out. ``scope`` is the request's ASGI scope: read it, do not keep it.
    """

    method: str
    route: str
    status: str
    status_code: int | None
    duration: float
    ttfb: float | None
    request_bytes: int
    response_bytes: int
    exception: str | None
    labels: Mapping[str, str]
    scope: Scope
    recorded: bool


RequestHookCallable = Callable[[RequestInfo], "Awaitable[None] | None"]


def disabled_by_env(name: str | None) -> bool:
    """Whether environment variable ``name`` switches the instrumentation off (read now)."""
    if name is None:
        return False
    if not isinstance(name, str) or not name:
        raise ValueError(ERR_ENV_NAME.format(name))
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value in _ENV_ON:
        return True
    if value in _ENV_OFF:
        return False
    raise ValueError(ERR_ENV_VALUE.format(name, raw))


def check_label_name(name: object) -> str:
    if not isinstance(name, str) or not _LABEL_NAME.match(name) or name.startswith("__"):
        raise ValueError(ERR_LABEL_NAME.format(name))
    if name in RESERVED_LABELS:
        raise ValueError(ERR_LABEL_RESERVED.format(name))
    return name


def constant_labels(labels: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """Validated ``labels=``: ``((name, value), ...)`` in the order given."""
    if labels is None:
        return ()
    if not isinstance(labels, Mapping):
        raise ValueError(ERR_MAPPING.format("labels", "string value", labels))
    out = []
    for name, value in labels.items():
        check_label_name(name)
        if not isinstance(value, str):
            raise ValueError(ERR_LABEL_VALUE.format(value, name))
        out.append((name, value))
    return tuple(out)


def label_callables(
    label_from: Mapping[str, LabelCallable] | None, constant: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, LabelCallable], ...]:
    """Validated ``label_from=``: ``((name, callable), ...)`` in the order given."""
    if label_from is None:
        return ()
    if not isinstance(label_from, Mapping):
        raise ValueError(ERR_MAPPING.format("label_from", "callable", label_from))
    taken = {name for name, _ in constant}
    out = []
    for name, func in label_from.items():
        check_label_name(name)
        if name in taken:
            raise ValueError(ERR_LABEL_TWICE.format(name))
        if not callable(func):
            raise ValueError(ERR_LABEL_CALLABLE.format(func, name))
        out.append((name, func))
    return tuple(out)


def skip_method_labels(methods: Iterable[str]) -> frozenset[object]:
    """Validated ``skip_methods=``: the raw methods (as servers send them) to pass through."""
    if isinstance(methods, str):
        methods = (methods,)
    out: set[object] = set()
    for method in methods:
        if not isinstance(method, str) or not method.isalpha():
            raise ValueError(ERR_SKIP_METHOD.format(method))
        upper = method.upper()
        out.add(upper)
        if upper not in STANDARD_METHODS:
            out.add(method)
    return frozenset(out)


def hook_callables(
    hooks: Iterable[RequestHookCallable] | RequestHookCallable | None,
) -> tuple[RequestHookCallable, ...]:
    if hooks is None:
        return ()
    out = (hooks,) if callable(hooks) else tuple(hooks)
    for hook in out:
        if not callable(hook):
            raise ValueError(ERR_HOOK.format(hook))
    return out


def check_positive(value: object, message: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(message.format(value))
    return float(value)


def check_limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(ERR_LABEL_LIMIT.format(value))
    return value


#: What :func:`settle` gives for a callback that failed, timed out or could not be awaited.
FAILED: Any = object()


async def settle(
    registry: PerfRegistry, component: str, result: Any, timeout: float, cancelled: bool
) -> Any:
    """The value of a callback's result, awaiting it (bounded by ``timeout``) if it is awaitable.

    A request that was cancelled cannot await (a cancelled task scope re-raises at every await):
    its awaitables are closed unawaited and counted. Errors are counted and give :data:`FAILED`.
    """
    if not inspect.isawaitable(result):
        return result
    if cancelled:
        _close(result)
        registry.report_error(component, asyncio.CancelledError("request cancelled"), log=False)
        return FAILED
    try:
        return await asyncio.wait_for(result, timeout)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a hook's fault never reaches the app
        registry.report_error(component, exc)
        return FAILED


def _close(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None) or getattr(awaitable, "cancel", None)
    if close is not None:
        close()


class LabelValues:
    """Computes the ``label_from`` values of one request: each callable's answer, bounded.

    A value must be a string (``None`` counts as ``""``); anything else, a callable that raises or
    times out, a value longer than :data:`MAX_LABEL_VALUE_LENGTH`, and every distinct value past the
    first ``limit`` of a label become ``__other__``. Faults are counted in
    ``asgi_perf_instrumentation_errors_total{component="http_labels"}``, values folded past the
    cap in ``asgi_perf_series_overflow_total{metric="http_requests_total"}``.
    """

    def __init__(
        self,
        registry: PerfRegistry,
        funcs: tuple[tuple[str, LabelCallable], ...],
        limit: int,
        timeout: float,
    ) -> None:
        self.registry = registry
        self.funcs = tuple(func for _, func in funcs)
        self.limiters = tuple(
            NameLimiter(max_names=limit, max_length=MAX_LABEL_VALUE_LENGTH) for _ in funcs
        )
        self.timeout = timeout

    async def __call__(self, scope: Scope, cancelled: bool) -> tuple[str, ...]:
        values = []
        for func, limiter in zip(self.funcs, self.limiters, strict=True):
            try:
                value = func(scope)
            except Exception as exc:  # noqa: BLE001 - a label's fault never reaches the app
                self.registry.report_error("http_labels", exc)
                values.append(OTHER)
                continue
            if type(value) is not str:  # the common case skips the checks below
                value = await self._settle(value, cancelled)
            label = limiter(value)
            if label is OTHER and value != OTHER:
                self.registry.count_overflow("http_requests_total")
            values.append(label)
        return tuple(values)

    async def _settle(self, value: Any, cancelled: bool) -> str:
        value = await settle(self.registry, "http_labels", value, self.timeout, cancelled)
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if value is not FAILED:
            fault = TypeError(f"label value {type(value).__name__}, not str")
            self.registry.report_error("http_labels", fault)
        return OTHER


__all__ = [
    "DEFAULT_CALLBACK_TIMEOUT",
    "DEFAULT_LABEL_VALUES",
    "DISABLE_ENV",
    "FAILED",
    "MAX_LABEL_VALUE_LENGTH",
    "RESERVED_LABELS",
    "LabelCallable",
    "LabelValues",
    "RequestHookCallable",
    "RequestInfo",
    "check_label_name",
    "check_limit",
    "check_positive",
    "constant_labels",
    "disabled_by_env",
    "hook_callables",
    "label_callables",
    "settle",
    "skip_method_labels",
]

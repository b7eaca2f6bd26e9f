"""Push a registry to a Prometheus Pushgateway: for batch jobs and CLI runs nobody can scrape.

``registry.push(gateway, job)`` sends everything the registry exposes (scrape-time collectors
included) as one group; :func:`push_on_exit` wraps a job so it pushes once when the job ends,
however it ends, and never lets a failed push escape into the program's exit.

What is pushed is what ``/metrics`` would show, minus prometheus_client's ``*_created`` samples:
in the text format they become gauges of their own, which the Pushgateway stores and exposes for
every group until the group is deleted, and for a job that is gone they only repeat the time the
process started. With multi-worker mode on (``PROMETHEUS_MULTIPROC_DIR``), the merged view of
every worker on the host is pushed, as ``/metrics`` would serve it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import re
import time
import urllib.error
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, cast
from urllib.parse import SplitResult, urlsplit

from prometheus_client.exposition import (
    basic_auth_handler,
    default_handler,
    delete_from_gateway,
    push_to_gateway,
    pushadd_to_gateway,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .._checks import check, is_positive
from ..compat import Collects, exposed
from ..registry import CatalogueCollector, ComponentKey, PerfRegistry
from ._multiprocess import MULTIPROCESS

logger = logging.getLogger("asgi_perf.push")

P = ParamSpec("P")
R = TypeVar("R")

#: Seconds a push may take before it fails (the push at exit must not hold a job up for long).
DEFAULT_TIMEOUT = 10.0
#: Push methods: ``put`` replaces the whole group, ``add`` only the metrics it sends.
METHODS = ("put", "add")
COMPONENT = "push"

ERR_GATEWAY = (
    "gateway must be a Pushgateway address such as 'http://pushgateway:9091' or "
    "'pushgateway:9091' (http or https, a host, no query), got {!r}"
)
ERR_JOB = "job must be a non-empty string, got {!r}"
ERR_METHOD = (
    "method must be 'put' (replace the group) or 'add' (replace same-named metrics), got {!r}"
)
ERR_GROUPING_KEY = (
    "grouping_key must map label names ([a-zA-Z_][a-zA-Z0-9_]*, not 'job', not '__*') "
    "to strings; bad entry {!r}"
)
ERR_TIMEOUT = "timeout must be a number of seconds > 0, got {!r}"
ERR_BASIC = "basic_auth must be a (username, password) pair of non-empty strings"
ERR_HANDLER = "handler must be a prometheus_client push handler (a callable), got {!r}"
ERR_AUTH_TWICE = (
    "give credentials one way: basic_auth=, handler= and user:password@ in the gateway URL "
    "exclude each other"
)
ERR_REGISTRY = "push needs a PerfRegistry, got {!r}"
ERR_PUSH = "push to the Pushgateway at {} (job {!r}) failed: {}"

_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SCHEME_RE = re.compile(r"^\s*[a-zA-Z][a-zA-Z0-9+.-]*://")
#: How much of the Pushgateway's error body goes into the exception (it says what was rejected).
_BODY_LIMIT = 500

Handler = Callable[..., Callable[[], None]]


class PushError(OSError):
    """A push or delete the Pushgateway refused or that never reached it.

    ``url`` is the gateway without credentials; ``status`` the HTTP status, if there was one.
    """

    def __init__(self, message: str, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass(frozen=True)
class Target:
    """A validated Pushgateway group: where to send, as whom, and with what timeout.

    ``url`` never carries credentials (it is safe to log); the credentials live in ``handler``.
    """

    url: str
    job: str
    grouping_key: Mapping[str, str]
    timeout: float
    handler: Handler

    @classmethod
    def build(
        cls,
        gateway: str,
        job: str,
        grouping_key: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        basic_auth: tuple[str, str] | None = None,
        handler: Handler | None = None,
    ) -> Target:
        """Check every argument (``ValueError`` with a plain message) and build the target."""
        url, userinfo = _split_gateway(gateway)
        if not isinstance(job, str) or not job.strip():
            raise ValueError(ERR_JOB.format(job))
        key = _check_grouping_key(grouping_key)
        check(is_positive(timeout), ERR_TIMEOUT, timeout)
        if basic_auth is not None and (
            not isinstance(basic_auth, tuple)
            or len(basic_auth) != 2
            or not all(isinstance(part, str) and part for part in basic_auth)
        ):
            raise ValueError(ERR_BASIC)
        if handler is not None and not callable(handler):
            raise ValueError(ERR_HANDLER.format(handler))
        if sum(x is not None for x in (basic_auth, handler, userinfo)) > 1:
            raise ValueError(ERR_AUTH_TWICE)
        credentials = basic_auth or userinfo
        chosen = _basic_handler(*credentials) if credentials else handler or default_handler
        return cls(url, job, key, float(timeout), chosen)

    def describe(self) -> str:
        """``url`` plus the grouping key, for messages (no credentials)."""
        labels = "".join(f" {k}={v!r}" for k, v in sorted(self.grouping_key.items()))
        return f"{self.url}{labels}"


def _split_gateway(gateway: object) -> tuple[str, tuple[str, str] | None]:
    """The gateway URL without userinfo, and the userinfo as ``(user, password)`` if present."""
    if not isinstance(gateway, str):
        # Only the type: a bytes or URL object's repr would show a password it carries.
        raise ValueError(ERR_GATEWAY.format(type(gateway)))
    if not gateway.strip():
        raise ValueError(ERR_GATEWAY.format(gateway))
    text = gateway.strip()
    if "://" not in text:
        text = f"http://{text}"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - parsing the port is the check (ValueError if out of range)
    except ValueError:
        raise ValueError(ERR_GATEWAY.format(_redact(gateway))) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        # An "@" past the host means userinfo urlsplit did not see as such ("http://us/er:pw@h"):
        # kept, it would put the password into the URL that messages and logs show.
        or "@" in parts.path
    ):
        raise ValueError(ERR_GATEWAY.format(_redact(gateway)))
    userinfo = None
    if parts.username is not None or parts.password is not None:
        if not parts.username or not parts.password:
            raise ValueError(ERR_BASIC)
        userinfo = (parts.username, parts.password)
    netloc = parts.netloc.rpartition("@")[2]
    clean = SplitResult(parts.scheme, netloc, parts.path.rstrip("/"), "", "").geturl()
    return clean, userinfo


def _redact(gateway: str) -> str:
    """The gateway text with everything before its last ``@`` replaced, for error messages.

    Userinfo can hold ``/``, ``?``, ``:`` or ``@`` when it is malformed, so nothing before the last
    ``@`` is trusted to be free of it; only a leading ``scheme://`` is kept.
    """
    head, at, tail = gateway.rpartition("@")
    if not at:
        return gateway
    scheme = _SCHEME_RE.match(head)
    return f"{scheme.group(0) if scheme else ''}***@{tail}"


def _check_grouping_key(grouping_key: object) -> Mapping[str, str]:
    if grouping_key is None:
        return {}
    if not isinstance(grouping_key, Mapping):
        raise ValueError(ERR_GROUPING_KEY.format(grouping_key))
    for name, value in grouping_key.items():
        if (
            not isinstance(name, str)
            or not _LABEL_RE.match(name)
            or name == "job"
            or name.startswith("__")
            or not isinstance(value, str)
        ):
            raise ValueError(ERR_GROUPING_KEY.format((name, value)))
    return dict(grouping_key)


def _basic_handler(username: str, password: str) -> Handler:
    def handler(
        url: str, method: str, timeout: float | None, headers: Any, data: bytes
    ) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, username, password)

    return handler


class _Pushed(Collector):
    """What a push sends: the registry's families (or the merged multi-worker view), no _created."""

    def __init__(self, registry: PerfRegistry) -> None:
        merged = registry.find_component(MULTIPROCESS)
        source = merged.view if merged is not None else registry.prometheus
        self._source: Collects = exposed(source, registry.compat, registry.namespace)

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            created = family.name + "_created"
            if any(s.name == created for s in family.samples):
                copy = Metric(family.name, family.documentation, family.type, family.unit)
                copy.samples = [s for s in family.samples if s.name != created]
                family = copy  # noqa: PLW2901 - the stripped copy replaces the original
            yield family


def _send(target: Target, method: str, registry: PerfRegistry | None = None) -> None:
    key = dict(target.grouping_key)
    try:
        if registry is None:
            delete_from_gateway(target.url, target.job, key, target.timeout, target.handler)
        else:
            send = push_to_gateway if method == "put" else pushadd_to_gateway
            send(target.url, target.job, _Pushed(registry), key, target.timeout, target.handler)
    except urllib.error.HTTPError as exc:
        # The body is the Pushgateway's reason ("... is not a COUNTER"): the useful part.
        body = exc.read(_BODY_LIMIT).decode("utf-8", "replace").strip()
        reason = f"HTTP {exc.code} {exc.reason}" + (f": {body}" if body else "")
        message = ERR_PUSH.format(target.describe(), target.job, reason)
        raise PushError(message, target.url, exc.code) from exc
    except OSError as exc:
        # URLError.reason is the socket error ("[Errno 111] Connection refused", "timed out").
        reason = str(getattr(exc, "reason", None) or exc)
        message = ERR_PUSH.format(target.describe(), target.job, reason)
        raise PushError(message, target.url) from exc


def _checked(
    registry: object,
    method: object,
    gateway: str,
    job: str,
    grouping_key: Mapping[str, str] | None,
    timeout: float,
    basic_auth: tuple[str, str] | None,
    handler: Handler | None,
) -> Target:
    """Every argument of :func:`push` and :func:`push_on_exit` checked; the target to send to."""
    if not isinstance(registry, PerfRegistry):
        raise ValueError(ERR_REGISTRY.format(registry))
    if method not in METHODS:
        raise ValueError(ERR_METHOD.format(method))
    return Target.build(gateway, job, grouping_key, timeout, basic_auth, handler)


def push(
    registry: PerfRegistry,
    gateway: str,
    job: str,
    *,
    grouping_key: Mapping[str, str] | None = None,
    method: Literal["put", "add"] = "put",
    timeout: float = DEFAULT_TIMEOUT,
    basic_auth: tuple[str, str] | None = None,
    handler: Handler | None = None,
) -> None:
    """Push everything ``registry`` exposes to the Pushgateway as group ``job`` + ``grouping_key``.

    :param gateway: ``http://host:9091``, ``https://...`` or ``host:9091``; a path prefix is kept;
        ``user:password@`` in it is used as basic auth and never logged.
    :param grouping_key: more labels naming the group, such as ``{"instance": "host-1"}``.
    :param method: ``put`` replaces the whole group (metrics the job no longer has disappear);
        ``add`` replaces only the metrics pushed now and keeps the group's others.
    :param timeout: seconds before the push fails.
    :param basic_auth: ``(username, password)`` for a Pushgateway behind basic auth.
    :param handler: a prometheus_client push handler instead (``tls_auth_handler`` etc.).
    :raises ValueError: for a bad argument, before anything is sent.
    :raises PushError: the Pushgateway refused the push (its reason is in the message) or could
        not be reached.
    """
    target = _checked(registry, method, gateway, job, grouping_key, timeout, basic_auth, handler)
    _send(target, method, registry)


def delete(
    gateway: str,
    job: str,
    *,
    grouping_key: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    basic_auth: tuple[str, str] | None = None,
    handler: Handler | None = None,
) -> None:
    """Delete the group ``job`` + ``grouping_key`` from the Pushgateway (arguments as :func:`push`).

    Deleting a group that does not exist succeeds.
    """
    _send(Target.build(gateway, job, grouping_key, timeout, basic_auth, handler), "delete")


class JobOutcome(CatalogueCollector):
    """The last run of a job wrapped by :func:`push_on_exit`, exported at scrape time.

    Nothing is exported before a run ends. ``batch_job_last_success_timestamp_seconds`` is
    exported only by a run that succeeded, so a failed run pushed with ``method="add"`` leaves the
    previous success in the Pushgateway (the "time since the last success" alert keeps working).
    """

    metrics = (
        "batch_job_duration_seconds",
        "batch_job_success",
        "batch_job_last_success_timestamp_seconds",
    )

    def __init__(self, registry: PerfRegistry) -> None:
        super().__init__(registry)
        self.duration: float | None = None
        self.succeeded = False
        self.finished_at = 0.0
        registry.register(self)

    def record(self, duration: float, succeeded: bool) -> None:
        self.duration, self.succeeded, self.finished_at = duration, succeeded, time.time()

    def collect(self) -> Iterator[Metric]:
        if self.duration is None:
            return
        f = self.families()
        f["batch_job_duration_seconds"].add_metric([], self.duration)
        f["batch_job_success"].add_metric([], 1.0 if self.succeeded else 0.0)
        yield f["batch_job_duration_seconds"]
        yield f["batch_job_success"]
        if self.succeeded:
            f["batch_job_last_success_timestamp_seconds"].add_metric([], self.finished_at)
            yield f["batch_job_last_success_timestamp_seconds"]


#: The registry's last job outcome, shared by every ``push_on_exit`` on it.
JOB_OUTCOME: ComponentKey[JobOutcome] = ComponentKey("push.outcome")


def _succeeded(exc: BaseException | None) -> bool:
    if isinstance(exc, SystemExit):
        return exc.code in (None, 0)
    return exc is None


class PushOnExit:
    """Context manager (sync or async) and decorator (sync or async): pushes once at the job's end.

    Build it with :func:`push_on_exit`. The job's exception, if any, propagates unchanged; a
    failed push is logged (logger ``asgi_perf.push``, no credentials) and counted in
    ``asgi_perf_instrumentation_errors_total{component="push"}``, never raised.
    """

    def __init__(self, registry: PerfRegistry, target: Target, method: str) -> None:
        self.registry = registry
        self.target = target
        self.method = method
        self.outcome = registry.component(JOB_OUTCOME, lambda: JobOutcome(registry))
        #: Where run durations are read from (``time.perf_counter``; replaceable in tests).
        self.clock: Callable[[], float] = time.perf_counter
        # Start times of the ``with`` blocks open in the current context, innermost last: a
        # ContextVar so overlapping blocks in other tasks or threads never take each other's.
        self._starts: contextvars.ContextVar[tuple[float, ...]] = contextvars.ContextVar(
            f"asgi_perf_push_starts_{id(self):x}", default=()
        )
        # The latest start in any context, for a block left in another context than it was
        # entered in (an async fixture's teardown task, an exit stack closed by another task).
        self._last_start: float | None = None
        # Resolved now so the failure path has nothing left that could raise.
        self._errors = registry.counter("asgi_perf_instrumentation_errors_total").labels(COMPONENT)

    def __enter__(self) -> PushOnExit:
        self._last_start = started = self.clock()
        self._starts.set((*self._starts.get(), started))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(self._pop_start(), exc)

    async def __aenter__(self) -> PushOnExit:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.afinish(self._pop_start(), exc)

    def _pop_start(self) -> float:
        """This context's innermost start; never raises, so the push always happens."""
        starts = self._starts.get()
        if starts:
            self._starts.set(starts[:-1])
            return starts[-1]
        # Entered in another context: its copy of the stack is not visible here.
        return self._last_start if self._last_start is not None else self.clock()

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(func):
            afunc = cast("Callable[P, Awaitable[Any]]", func)

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                started = self.clock()
                try:
                    result = await afunc(*args, **kwargs)
                except BaseException as exc:
                    await self.afinish(started, exc)
                    raise
                await self.afinish(started)
                return result

            return cast("Callable[P, R]", async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            started = self.clock()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                self.finish(started, exc)
                raise
            self.finish(started)
            return result

        return wrapper

    def finish(self, started: float, exc: BaseException | None = None) -> bool:
        """Record the run that began at ``started`` (read from ``clock``) and push; never raises.

        A run succeeded when it returned, or left through ``sys.exit(0)``. Returns whether the
        push reached the Pushgateway. The push blocks for up to ``timeout``: in a coroutine,
        await :meth:`afinish` instead.
        """
        return self._report(self.clock() - started, exc)

    async def afinish(self, started: float, exc: BaseException | None = None) -> bool:
        """:meth:`finish` for coroutines: the push runs in a thread, the event loop runs on.

        Never raises, except ``CancelledError`` if the awaiting task is cancelled during the
        push (which then goes on in its thread).
        """
        duration = self.clock() - started
        try:
            return await asyncio.to_thread(self._report, duration, exc)
        except Exception as error:  # noqa: BLE001 - e.g. no thread left to run it at shutdown
            return self._lost(error)

    def _report(self, duration: float, exc: BaseException | None) -> bool:
        try:
            self.outcome.record(duration, _succeeded(exc))
            _send(self.target, self.method, self.registry)
        except Exception as error:  # noqa: BLE001 - a failed push must not change how the job ends
            return self._lost(error)
        return True

    def _lost(self, error: Exception) -> bool:
        logger.warning("asgi-perf: the push at the end of the job was lost: %s", error)
        self._errors.inc()
        return False


def push_on_exit(
    registry: PerfRegistry,
    gateway: str,
    job: str,
    *,
    grouping_key: Mapping[str, str] | None = None,
    method: Literal["put", "add"] = "add",
    timeout: float = DEFAULT_TIMEOUT,
    basic_auth: tuple[str, str] | None = None,
    handler: Handler | None = None,
) -> PushOnExit:
    """Push ``registry`` once when the wrapped job ends, whether it returns or raises.

    Use it as ``with push_on_exit(...):`` (``async with`` in a coroutine) around the job or as
    ``@push_on_exit(...)`` on its ``main`` (sync or async). The async forms push in a thread, so
    the event loop is not blocked while the push waits for the gateway. Each run also exports
    ``batch_job_duration_seconds``, ``batch_job_success`` (1 or 0) and, after a success,
    ``batch_job_last_success_timestamp_seconds``.

    Arguments as :func:`push`, checked now (``ValueError``), except that ``method`` defaults to
    ``add``: a failed run then replaces the metrics it pushes but keeps the last success time.
    """
    target = _checked(registry, method, gateway, job, grouping_key, timeout, basic_auth, handler)
    return PushOnExit(registry, target, method)


__all__ = [
    "DEFAULT_TIMEOUT",
    "ERR_AUTH_TWICE",
    "ERR_BASIC",
    "ERR_GATEWAY",
    "ERR_GROUPING_KEY",
    "ERR_HANDLER",
    "ERR_JOB",
    "ERR_METHOD",
    "ERR_PUSH",
    "ERR_REGISTRY",
    "ERR_TIMEOUT",
    "METHODS",
    "JobOutcome",
    "PushError",
    "PushOnExit",
    "Target",
    "delete",
    "push",
    "push_on_exit",
]

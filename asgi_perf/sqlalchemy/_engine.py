"""SQLAlchemy instrumentation: statement timing, slow-query flagging, pool health, per request.

``instrument_engine(engine, registry=..., name="main")`` times every cursor execution of a sync
``Engine`` or an ``AsyncEngine`` into ``db_query_duration_seconds{engine,operation,outcome}``.

Why the dialect and not cursor events: merely having ``before/after_cursor_execute`` listeners
costs ~6 µs per statement (SQLAlchemy's event dispatch), more than twice the whole budget. Instead
the engine's own dialect instance gets thin wrappers around ``do_execute``, ``do_executemany`` and
``do_execute_no_params`` (the three calls that run a statement on a DBAPI cursor). A wrapper holds
the start time in a local, so nothing is ever stored per connection or per execution: a failed or
cancelled statement is timed by the same wrapper that sees its exception, and leaves no state
behind. ``handle_error`` is still listened to for failures that happen before a cursor ever runs
(they are counted, marked on the exception so a second ``handle_error`` counts nothing).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
from collections.abc import Sequence
from time import perf_counter
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from .._checks import ERR_REGISTRY, check, is_finite, is_int_at_least, is_positive
from .._histogram import PlainHistogram, check_buckets
from .._labels import NameLimiter
from ..catalogue import LATENCY_BUCKETS
from ..registry import PerfRegistry
from ._fingerprint import FingerprintCache, operation_of
from ._reports import PerRequest, SlowQueries, StatementStats
from ._stats import (
    SLOW_QUERIES,
    EngineSeries,
    RequestQueries,
    SlowQueryLog,
    request_hook_for,
    slow_log_for,
    stats_for,
)

logger = logging.getLogger("asgi_perf.sqlalchemy")

ERR_ENGINE = "instrument_engine() needs a sqlalchemy Engine or AsyncEngine, got {!r}"
ERR_NAME = "name must be 1-64 characters of letters, digits, '_', '-', '.' or ':', got {!r}"
ERR_NAME_TAKEN = "engine name {!r} is already used by another engine on this registry"
ERR_OTHER_REGISTRY = (
    "this engine is already instrumented (into another registry or under another name); "
    "detach() that handle first"
)
ERR_THRESHOLD = "slow_query_threshold must be a positive number of seconds or None, got {!r}"
ERR_INTERVAL = "slow_log_interval must be a number of seconds >= 0, got {!r}"
ERR_MAX_FINGERPRINTS = "max_fingerprints must be an int >= 1, got {!r}"
ERR_N_PLUS_ONE = "n_plus_one_threshold must be an int >= 2 or None, got {!r}"

#: Outcome labels of ``db_query_duration_seconds``.
OK, ERROR, CANCELLED = "ok", "error", "cancelled"
#: The PEP 249 exception names used as ``error`` labels (a driver's subclass maps onto these).
DBAPI_ERRORS = (
    "IntegrityError",
    "ProgrammingError",
    "OperationalError",
    "DataError",
    "NotSupportedError",
    "InternalError",
    "InterfaceError",
    "DatabaseError",
    "Error",
    "Warning",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
# Set on an exception once it is recorded, so a later handle_error for it records nothing.
_RECORDED = "_asgi_perf_recorded"
_MAX_CACHED_STATEMENTS = 2000
# Dialects where "..." is always an identifier. Elsewhere it may be a string literal (MySQL; SQLite
# accepts double-quoted strings for compatibility; SQL Server with QUOTED_IDENTIFIER OFF), so the
# fingerprint redacts it like one: identifiers lost from the display, never a value shown.
_DOUBLE_QUOTED_IDENTIFIER_DIALECTS = frozenset({"postgresql", "oracle"})


class _Statement:
    """What is cached per distinct statement text: its operation, ``ok`` histogram and stats.

    ``stats`` is a reference to the fingerprint's row in the engine's :class:`StatementStats`,
    which owns it: dropping this cache entry (the cache starts over when full) loses no counts.
    """

    __slots__ = ("hist", "operation", "stats")

    def __init__(self, operation: str, hist: PlainHistogram) -> None:
        self.operation = operation
        self.hist = hist
        self.stats: list[Any] | None = None  # [fingerprint, sql, count, total, max]


class InstrumentedEngine:
    """The handle :func:`instrument_engine` returns; :meth:`detach` removes every hook.

    It times statements (the hot path) and counts errors, rows and pool events; slow queries,
    per-request counts with the N+1 signal, and statement stats are reported by their own objects
    (:mod:`asgi_perf.sqlalchemy._reports`).
    """

    def __init__(
        self,
        engine: Engine,
        registry: PerfRegistry,
        name: str,
        *,
        slow_query_threshold: float | None,
        buckets: tuple[float, ...],
        slow_log_interval: float,
        log_parameters: bool,
        statement_stats: bool,
        max_fingerprints: int,
        n_plus_one_threshold: int | None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.name = name
        self.slow_query_threshold = slow_query_threshold
        self._slow = math.inf if slow_query_threshold is None else slow_query_threshold
        self._stats = stats_for(registry)
        self._series: EngineSeries = self._stats.add(self, buckets)
        self._lock = self._series.lock
        self._hook: RequestQueries = request_hook_for(registry, self._stats)
        self._request_var = self._hook.var
        self._fingerprints = FingerprintCache(
            double_quoted_identifiers=engine.dialect.name in _DOUBLE_QUOTED_IDENTIFIER_DIALECTS
        )
        self._slow_queries = SlowQueries(
            name,
            registry,
            slow_log_for(registry),
            self._fingerprints,
            interval=slow_log_interval,
            log_parameters=log_parameters,
        )
        self._per_request = PerRequest(name, self._fingerprints, n_plus_one=n_plus_one_threshold)
        self._statement_stats = (
            StatementStats(
                registry, self._fingerprints, self._lock, max_fingerprints=max_fingerprints
            )
            if statement_stats
            else None
        )
        # Statement text -> cached entry. Written without a lock and never iterated, so a
        # concurrent insert or reset is harmless; it may be dropped whenever it is full.
        self._statements: dict[str, _Statement] = {}
        self._error_names = NameLimiter(max_names=50)
        self._error_labels: dict[type[BaseException], str] = {}
        self._errors = registry.counter("db_query_errors_total")
        self._rows = registry.counter("db_rows_total")
        self._timeouts = registry.counter("db_pool_checkout_timeouts_total").labels(name)
        self._created = registry.counter("db_connections_created_total").labels(name)
        self._invalidated = registry.counter("db_connections_invalidated_total").labels(name)
        self._pool: Any = None
        self._pool_connect: Any = None
        self._dialect = engine.dialect
        self._wrapped: dict[str, Any] = {}
        self._listeners = (
            ("handle_error", self._on_handle_error),
            ("connect", self._on_connect),
            ("invalidate", self._on_invalidate),
            ("soft_invalidate", self._on_invalidate),
        )
        self.attached = False

    # -- attach / detach -------------------------------------------------------------------------
    def _attach(self) -> None:
        dialect = self._dialect
        self._wrapped = {
            "do_execute": self._wrap_execute(dialect.do_execute),
            "do_executemany": self._wrap_executemany(dialect.do_executemany),
            "do_execute_no_params": self._wrap_no_params(dialect.do_execute_no_params),
        }
        for attr, wrapper in self._wrapped.items():
            # An instance attribute shadows the dialect class's method for this engine only.
            setattr(dialect, attr, wrapper)
        for identifier, fn in self._listeners:
            event.listen(self.engine, identifier, fn)
        self._wrap_pool()
        self.attached = True

    def detach(self) -> None:
        """Remove every wrapper and listener; the engine runs exactly as before. Idempotent."""
        if not self.attached:
            return
        self.attached = False
        for attr, wrapper in self._wrapped.items():
            if vars(self._dialect).get(attr) is wrapper:
                delattr(self._dialect, attr)
        self._wrapped = {}
        for identifier, fn in self._listeners:
            if event.contains(self.engine, identifier, fn):
                event.remove(self.engine, identifier, fn)
        pool = self._pool
        if pool is not None and vars(pool).get("connect") is self._pool_connect:
            del pool.connect
        self._pool = self._pool_connect = None
        self._stats.remove(self.name)
        with _HANDLES_LOCK:
            if _HANDLES.get(self.engine) is self:
                del _HANDLES[self.engine]

    def current_pool(self) -> Any:
        """The engine's pool now (a new object after ``dispose()``), wrapped for checkout timing."""
        if self.attached:
            self._wrap_pool()
        return self.engine.pool

    # -- statement wrappers (the hot path) -------------------------------------------------------
    def _wrap_execute(self, orig: Any) -> Any:
        ok, failed = self._ok, self._failed

        def do_execute(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
            start = perf_counter()
            try:
                orig(cursor, statement, parameters, context)
            except BaseException as exc:
                failed(exc, statement, parameters, context, perf_counter() - start)
                raise
            ok(statement, parameters, context, perf_counter() - start)

        return do_execute

    def _wrap_no_params(self, orig: Any) -> Any:
        ok, failed = self._ok, self._failed

        def do_execute_no_params(cursor: Any, statement: str, context: Any = None) -> None:
            start = perf_counter()
            try:
                orig(cursor, statement, context)
            except BaseException as exc:
                failed(exc, statement, None, context, perf_counter() - start)
                raise
            ok(statement, None, context, perf_counter() - start)

        return do_execute_no_params

    def _wrap_executemany(self, orig: Any) -> Any:
        ok, failed = self._ok, self._failed

        def do_executemany(
            cursor: Any, statement: str, parameters: Any, context: Any = None
        ) -> None:
            start = perf_counter()
            try:
                orig(cursor, statement, parameters, context)
            except BaseException as exc:
                failed(exc, statement, parameters, context, perf_counter() - start)
                raise
            ok(statement, parameters, context, perf_counter() - start, len(parameters))

        return do_executemany

    def _ok(
        self, statement: str, parameters: Any, context: Any, duration: float, rows: int = 0
    ) -> None:
        try:
            entry = self._statements.get(statement)
            if entry is None:
                entry = self._new_statement(statement)
            with self._lock:
                entry.hist.observe(duration)
            if rows or (context is not None and context.executemany):
                self._count_rows(entry.operation, rows, context)
            if duration >= self._slow:
                self._slow_query(entry.operation, statement, parameters, context, duration, OK)
            acc = self._request_var.get()
            if acc is not None:
                self._per_request.add(acc, entry, statement, duration)
            stats = self._statement_stats
            if stats is not None:
                stats.add(entry, statement, duration)
        except Exception as exc:  # noqa: BLE001 - never let recording break the query
            self.registry.report_error("sqlalchemy", exc)

    def _failed(
        self,
        error: BaseException,
        statement: str,
        parameters: Any,
        context: Any,
        duration: float,
    ) -> None:
        try:
            operation = operation_of(statement)
            if isinstance(error, Exception):
                outcome = ERROR
                self._errors.labels(self.name, self._error_label(error)).inc()
            else:
                # Task cancellation, KeyboardInterrupt, greenlet exit: interrupted, not failed.
                outcome = CANCELLED
            hist = self._stats.duration_series(self._series, operation, outcome)
            with self._lock:
                hist.observe(duration)
            _mark(error)
            if duration >= self._slow:
                self._slow_query(operation, statement, parameters, context, duration, outcome)
            acc = self._request_var.get()
            if acc is not None:
                self._per_request.add(acc, None, statement, duration)
        except Exception as exc:  # noqa: BLE001
            self.registry.report_error("sqlalchemy", exc)

    def _new_statement(self, statement: str) -> _Statement:
        operation = operation_of(statement)
        entry = _Statement(operation, self._stats.duration_series(self._series, operation, OK))
        if len(self._statements) >= _MAX_CACHED_STATEMENTS:
            # Distinct texts without end (literals in raw SQL): start over, never grow.
            self._statements = {}
        self._statements[statement] = entry
        return entry

    def _count_rows(self, operation: str, rows: int, context: Any) -> None:
        if not rows:
            # insertmanyvalues: one INSERT per batch through do_execute; count the rows once.
            if getattr(context, "_asgi_perf_rows", False):
                return
            context._asgi_perf_rows = True
            rows = len(getattr(context, "compiled_parameters", None) or ())
        if rows:
            self._rows.labels(self.name, operation).inc(rows)

    def statement_stats(self) -> list[dict[str, Any]]:
        """Per-fingerprint ``count``, ``total`` and ``max`` seconds, largest total first.

        Empty unless ``statement_stats=True``; at most ``max_fingerprints`` fingerprints, the rest
        folded into one ``__overflow__`` entry. Counts only grow: they are kept per fingerprint,
        independently of the bounded statement-text cache.
        """
        return [] if self._statement_stats is None else self._statement_stats.rows()

    # -- slow queries ----------------------------------------------------------------------------
    def _slow_query(
        self,
        operation: str,
        statement: str,
        parameters: Any,
        context: Any,
        duration: float,
        outcome: str,
    ) -> None:
        self._slow_queries.report(
            operation,
            statement,
            parameters,
            context,
            duration,
            outcome,
            hide_parameters=self.engine.hide_parameters,
        )

    # -- errors ----------------------------------------------------------------------------------
    def _error_label(self, error: BaseException) -> str:
        cls = type(error)
        label = self._error_labels.get(cls)
        if label is None:
            names = {klass.__name__ for klass in cls.__mro__}
            label = next((n for n in DBAPI_ERRORS if n in names), None) or self._error_names(
                cls.__name__
            )
            self._error_labels[cls] = label
        return label

    def _on_handle_error(self, ctx: Any) -> None:
        try:
            error = ctx.original_exception
            if getattr(error, _RECORDED, False):
                return
            _mark(error)
            if isinstance(error, Exception):
                self._errors.labels(self.name, self._error_label(error)).inc()
        except Exception as exc:  # noqa: BLE001
            self.registry.report_error("sqlalchemy", exc)

    # -- pool ------------------------------------------------------------------------------------
    def _wrap_pool(self) -> None:
        pool = self.engine.pool
        if pool is self._pool:
            return
        orig = pool.connect
        series, lock, timeouts = self._series, self._lock, self._timeouts
        registry = self.registry

        def connect() -> Any:
            start = perf_counter()
            try:
                return orig()
            except sa_exc.TimeoutError:
                timeouts.inc()
                raise
            finally:
                try:
                    with lock:
                        series.checkout.observe(perf_counter() - start)
                except Exception as exc:  # noqa: BLE001
                    registry.report_error("sqlalchemy", exc)

        pool.connect = connect  # type: ignore[method-assign]
        self._pool, self._pool_connect = pool, connect

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        try:
            self._created.inc()
            # After engine.dispose() the engine has a new pool: wrap it before it can be full.
            self._wrap_pool()
        except Exception as exc:  # noqa: BLE001
            self.registry.report_error("sqlalchemy", exc)

    def _on_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        self._invalidated.inc()


def _mark(error: BaseException) -> None:
    # An exception type without a __dict__ cannot be marked: it may then be counted twice.
    with contextlib.suppress(Exception):
        setattr(error, _RECORDED, True)


# One handle per engine, process-wide: a second wrapper on one dialect would count twice.
_HANDLES: dict[Engine, InstrumentedEngine] = {}
_HANDLES_LOCK = threading.Lock()


def instrument_engine(
    engine: Any,
    *,
    registry: PerfRegistry,
    name: str = "default",
    slow_query_threshold: float | None = 0.5,
    buckets: Sequence[float] = LATENCY_BUCKETS,
    slow_log_interval: float = 60.0,
    log_parameters: bool = False,
    statement_stats: bool = False,
    max_fingerprints: int = 500,
    n_plus_one_threshold: int | None = None,
) -> InstrumentedEngine:
    """Instrument a SQLAlchemy ``Engine`` or ``AsyncEngine``; returns a handle with ``detach()``.

    :param registry: where to report.
    :param name: the ``engine`` label (one per engine on a registry).
    :param slow_query_threshold: seconds; statements at least this slow are counted in
        ``db_slow_queries_total``, logged (rate-limited) and kept in the registry's recent
        slow-query list. ``None`` turns slow-query flagging off.
    :param buckets: ``db_query_duration_seconds`` bounds (also used for checkout waits).
    :param slow_log_interval: log a given statement fingerprint at most once per this many
        seconds (every occurrence is still counted and listed).
    :param log_parameters: opt in to bound parameters in slow-query log records; ignored when
        the engine was created with ``hide_parameters=True``. Never in labels or the recent list.
    :param statement_stats: keep per-fingerprint count / total / max (:meth:`statement_stats`).
    :param max_fingerprints: hard cap on fingerprints kept by ``statement_stats``.
    :param n_plus_one_threshold: log once per statement when one HTTP request runs the same
        SELECT this many times (needs :class:`~asgi_perf.PerfMiddleware` on the same registry).

    Calling it again for the same engine, registry and name returns the same handle.
    """
    if not isinstance(registry, PerfRegistry):
        raise ValueError(ERR_REGISTRY.format(registry))
    sync_engine = getattr(engine, "sync_engine", engine)
    if not isinstance(sync_engine, Engine):
        raise ValueError(ERR_ENGINE.format(engine))
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(ERR_NAME.format(name))
    threshold = slow_query_threshold
    check(threshold is None or is_positive(threshold), ERR_THRESHOLD, threshold)
    interval = slow_log_interval
    check(is_finite(interval) and interval >= 0, ERR_INTERVAL, interval)
    check(is_int_at_least(max_fingerprints, 1), ERR_MAX_FINGERPRINTS, max_fingerprints)
    n_plus_one = n_plus_one_threshold
    check(n_plus_one is None or is_int_at_least(n_plus_one, 2), ERR_N_PLUS_ONE, n_plus_one)
    bounds = check_buckets(buckets)

    with _HANDLES_LOCK:
        existing = _HANDLES.get(sync_engine)
        if existing is not None:
            if existing.registry is registry and existing.name == name:
                return existing
            raise ValueError(ERR_OTHER_REGISTRY)
        if any(h.registry is registry and h.name == name for h in _HANDLES.values()):
            raise ValueError(ERR_NAME_TAKEN.format(name))
        handle = InstrumentedEngine(
            sync_engine,
            registry,
            name,
            slow_query_threshold=float(slow_query_threshold)
            if slow_query_threshold is not None
            else None,
            buckets=bounds,
            slow_log_interval=float(slow_log_interval),
            log_parameters=bool(log_parameters),
            statement_stats=bool(statement_stats),
            max_fingerprints=max_fingerprints,
            n_plus_one_threshold=n_plus_one_threshold,
        )
        handle._attach()
        _HANDLES[sync_engine] = handle
    return handle


__all__ = [
    "CANCELLED",
    "DBAPI_ERRORS",
    "ERROR",
    "OK",
    "SLOW_QUERIES",
    "InstrumentedEngine",
    "SlowQueryLog",
    "instrument_engine",
]

"""What an instrumented engine reports beyond timing: slow queries, N+1 SELECTs, statement stats.

Each is its own small class with its own state, so :class:`~asgi_perf.sqlalchemy.InstrumentedEngine`
keeps only the timing hot path and calls into these when a statement is slow, runs inside a request,
or statement stats are on. All three name statements by fingerprint (literal-free, bounded), never
by their text or parameters, unless ``log_parameters=True`` asks for the latter in the slow log.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from .._labels import OVERFLOW
from ..registry import PerfRegistry
from ._fingerprint import FingerprintCache

if TYPE_CHECKING:
    from ._stats import SlowQueryLog

logger = logging.getLogger("asgi_perf.sqlalchemy")

#: At most this many characters of a statement's parameters in a slow-query log line.
MAX_PARAMS_REPR = 500
#: At most this many fingerprints remembered for log rate-limiting and N+1 de-duplication.
LOG_STATE_LIMIT = 1000


class StatementEntry(Protocol):
    """What the engine caches per statement text (its ``_Statement``)."""

    operation: str
    stats: list[Any] | None


class SlowQueries:
    """Counts every slow statement, records it in the registry's slow-query log, and logs it at
    most once per fingerprint per ``interval`` seconds."""

    def __init__(
        self,
        name: str,
        registry: PerfRegistry,
        slow_log: SlowQueryLog,
        fingerprints: FingerprintCache,
        *,
        interval: float,
        log_parameters: bool,
    ) -> None:
        self.name = name
        self._slow_log = slow_log
        self._fingerprints = fingerprints
        self._interval = interval
        self._log_parameters = log_parameters
        self._total = registry.counter("db_slow_queries_total")
        self._last_logged: dict[str, float] = {}
        self._lock = threading.Lock()

    def report(
        self,
        operation: str,
        statement: str,
        parameters: Any,
        context: Any,
        duration: float,
        outcome: str,
        *,
        hide_parameters: bool,
    ) -> None:
        self._total.labels(self.name, operation).inc()
        compiled = getattr(context, "compiled", None)
        # The compiled string has placeholders where expanded IN-lists and literal_execute values
        # were rendered into the statement: safer and more stable than what was sent.
        sql = getattr(compiled, "string", None) or statement
        fingerprint, normalised = self._fingerprints.get(sql)
        count = self._slow_log.add(self.name, operation, fingerprint, normalised, duration)
        now = time.monotonic()
        with self._lock:
            last = self._last_logged.get(fingerprint)
            if last is not None and now - last < self._interval:
                return
            if len(self._last_logged) >= LOG_STATE_LIMIT:
                self._last_logged.clear()
            self._last_logged[fingerprint] = now
        message = "slow query on engine %s: %.3f s (%s, %s) %s [fingerprint %s, seen %d times]"
        args: list[Any] = [self.name, duration, operation, outcome, normalised, fingerprint, count]
        if self._log_parameters and not hide_parameters and parameters is not None:
            message += " parameters=%s"
            args.append(repr(parameters)[:MAX_PARAMS_REPR])
        logger.warning(
            message,
            *args,
            extra={
                "engine": self.name,
                "operation": operation,
                "outcome": outcome,
                "duration": duration,
                "fingerprint": fingerprint,
                "sql": normalised,
            },
        )


class PerRequest:
    """Adds each statement to the running request's count and time, and flags a SELECT repeated
    ``n_plus_one`` times in one request (a likely N+1), logged once per fingerprint."""

    def __init__(
        self, name: str, fingerprints: FingerprintCache, *, n_plus_one: int | None
    ) -> None:
        self.name = name
        self._fingerprints = fingerprints
        self._n_plus_one = n_plus_one
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def add(
        self,
        acc: dict[str, list[Any]],
        entry: StatementEntry | None,
        statement: str,
        duration: float,
    ) -> None:
        mine = acc.get(self.name)
        if mine is None:
            mine = acc[self.name] = [0, 0.0, None]
        mine[0] += 1
        mine[1] += duration
        if self._n_plus_one is not None and entry is not None and entry.operation == "SELECT":
            repeats = mine[2]
            if repeats is None:
                repeats = mine[2] = {}
            seen = repeats[statement] = repeats.get(statement, 0) + 1
            if seen == self._n_plus_one:
                self._report(statement, seen)

    def _report(self, statement: str, seen: int) -> None:
        fingerprint, sql = self._fingerprints.get(statement)
        with self._lock:
            if fingerprint in self._logged:
                return
            if len(self._logged) >= LOG_STATE_LIMIT:
                return
            self._logged.add(fingerprint)
        logger.warning(
            "possible N+1 on engine %s: one request ran the same SELECT %d times: %s "
            "[fingerprint %s] (logged once per statement)",
            self.name,
            seen,
            sql,
            fingerprint,
            extra={"engine": self.name, "fingerprint": fingerprint, "sql": sql},
        )


class StatementStats:
    """Per-fingerprint count, total and max seconds (``statement_stats=True``), capped at
    ``max_fingerprints`` with the rest folded into one ``__overflow__`` row.

    The rows are kept here, apart from the engine's bounded statement-text cache (which only holds
    a reference), so dropping that cache loses no counts. ``lock`` is the engine series' lock.
    """

    def __init__(
        self,
        registry: PerfRegistry,
        fingerprints: FingerprintCache,
        lock: threading.Lock,
        *,
        max_fingerprints: int,
    ) -> None:
        self._registry = registry
        self._fingerprints = fingerprints
        self._lock = lock
        self._max = max_fingerprints
        # Fingerprint -> [fingerprint, sql, count, total, max]
        self._rows: dict[str, list[Any]] = {}
        self._overflow: list[Any] | None = None

    def add(self, entry: StatementEntry, statement: str, duration: float) -> None:
        stats = entry.stats
        if stats is None:
            stats = entry.stats = self._row(statement)
        with self._lock:
            stats[2] += 1
            stats[3] += duration
            stats[4] = max(stats[4], duration)

    def _row(self, statement: str) -> list[Any]:
        # Normalising runs outside the lock; one dict lookup inside, whatever the number of texts.
        fingerprint, sql = self._fingerprints.get(statement)
        with self._lock:
            stats = self._rows.get(fingerprint)
            if stats is not None:
                return stats  # another text with the same shape (IN-list length, literals)
            if len(self._rows) < self._max:
                stats = self._rows[fingerprint] = [fingerprint, sql, 0, 0.0, 0.0]
                return stats
            if self._overflow is None:
                self._registry.count_overflow("db_statement_stats")
                self._overflow = [OVERFLOW, OVERFLOW, 0, 0.0, 0.0]
            return self._overflow

    def rows(self) -> list[dict[str, Any]]:
        """Every fingerprint's figures, largest total first."""
        with self._lock:
            rows = [list(stats) for stats in self._rows.values()]
            if self._overflow is not None:
                rows.append(list(self._overflow))
        out = [
            {"fingerprint": s[0], "sql": s[1], "count": s[2], "total": s[3], "max": s[4]}
            for s in rows
        ]
        return sorted(out, key=lambda row: row["total"], reverse=True)


__all__ = [
    "LOG_STATE_LIMIT",
    "MAX_PARAMS_REPR",
    "PerRequest",
    "SlowQueries",
    "StatementEntry",
    "StatementStats",
]

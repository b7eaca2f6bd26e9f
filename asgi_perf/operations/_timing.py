"""Custom timers and counters: ``@registry.timed``, ``registry.timer``, ``registry.count``.

The application's own operations (a report build, a call to a payment API) are timed into one
histogram labelled by a bounded timer name. ``registry.stats(name)`` reads count, total, min, max,
mean and p50/p95/p99 back without a Prometheus server: min and max are exact, the percentiles are
estimated from the histogram buckets the same way PromQL's ``histogram_quantile`` does.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from time import perf_counter
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from prometheus_client.metrics_core import Metric

from .._exemplars import histogram_class, shared_histogram_class
from .._histogram import PlainHistogram, check_buckets, quantile
from .._labels import NameLimiter
from .._native_snapshots import add_histogram
from .._shared import COUNTER, SharedCounterDict, SharedStore
from ..catalogue import LATENCY_BUCKETS
from ..registry import CatalogueCollector, PerfRegistry
from ._keys import TIMINGS
from ._schema import TimerStats

P = ParamSpec("P")
R = TypeVar("R")

#: How many distinct timer names (and, separately, counter names) get their own series.
DEFAULT_MAX_NAMES = 100

ERR_NAME = "timer and counter names must be non-empty strings, got {!r}"
ERR_VALUE = "count() takes a finite number >= 0 (counters only go up), got {!r}"
ERR_GENERATOR = (
    "timed() cannot time generator functions: the call returns before the work is done; "
    "time the consuming code with registry.timer() instead ({!r})"
)
ERR_NOT_CALLABLE = "timed() decorates functions, got {!r}"


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(ERR_NAME.format(name))
    return name


class _Series:
    """One timer: its histogram plus the exact extremes and error count a histogram cannot give."""

    __slots__ = ("errors", "hist", "max", "min")

    def __init__(
        self,
        bounds: tuple[float, ...],
        histogram: Callable[[tuple[float, ...]], PlainHistogram] = PlainHistogram,
    ) -> None:
        self.hist = histogram(bounds)
        self.min = math.inf
        self.max = -math.inf
        self.errors = 0


class _SharedSeries(_Series):
    """A timer of a multi-worker registry: its histogram and error count in shared memory (the
    exact extremes, read only by ``stats()``, stay in this worker)."""

    __slots__ = ("_errors_slot", "_store")

    def __init__(
        self, bounds: tuple[float, ...], registry: PerfRegistry, store: SharedStore, name: str
    ) -> None:
        self._store = store
        spec = registry.spec("app_timer_errors_total")
        family = registry.metric_name(spec.name).removesuffix("_total")
        self._errors_slot = store.allocate(family, COUNTER, spec.help, [("name", name)])
        super().__init__(bounds)
        spec = registry.spec("app_timer_duration_seconds")
        self.hist = shared_histogram_class(registry)(
            bounds, store, registry.metric_name(spec.name), spec.help, [("name", name)]
        )

    @property
    def errors(self) -> int:
        return int(self._store.values[self._errors_slot])

    @errors.setter
    def errors(self, value: int) -> None:
        self._store.values[self._errors_slot] = value


class _SharedNamedCounters(MutableMapping[str, float]):
    """``{counter name: value}`` over a :class:`SharedCounterDict` keyed by ``(name,)``."""

    def __init__(self, registry: PerfRegistry, store: SharedStore) -> None:
        spec = registry.spec("app_events_total")
        family = registry.metric_name(spec.name).removesuffix("_total")
        self._series = SharedCounterDict(store, family, spec.help, spec.labels)

    def __getitem__(self, name: str) -> float:
        return self._series[(name,)]

    def __setitem__(self, name: str, value: float) -> None:
        self._series[(name,)] = value

    def __delitem__(self, name: str) -> None:
        del self._series[(name,)]

    def __iter__(self) -> Iterator[str]:
        return (key[0] for key in self._series)

    def __len__(self) -> int:
        return len(self._series)


class Timings(CatalogueCollector):
    """The per-registry store behind the timing API; also its scrape-time collector.

    Timed code may run in worker threads (sync endpoints run in a thread pool), so updates take a
    lock: about 0.1 µs, against the microseconds the timed code itself costs.

    :param registry: where the series are exported.
    :param max_names: distinct timer names (and counter names) before new ones become ``__other__``.
    :param buckets: histogram bounds in seconds.
    """

    metrics = ("app_timer_duration_seconds", "app_timer_errors_total", "app_events_total")

    def __init__(
        self,
        registry: PerfRegistry,
        *,
        max_names: int = DEFAULT_MAX_NAMES,
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(registry)
        self.bounds = check_buckets(buckets)
        self._timer_names = NameLimiter(max_names=max_names)
        self._counter_names = NameLimiter(max_names=max_names)
        self._timers: dict[str, _Series] = {}
        self._counters: MutableMapping[str, float] = {}
        histogram = histogram_class(registry)  # native and/or with exemplars, as the registry says
        self._new_series: Callable[[str], _Series] = lambda _name: _Series(self.bounds, histogram)
        self._lock = threading.Lock()
        store = registry.shared
        if store is not None:
            # Multi-worker mode, decided here: histograms and counters in shared memory, exact
            # at every scrape and kept if the worker dies; nothing of this is published.
            self._counters = _SharedNamedCounters(registry, store)
            self._new_series = lambda name: _SharedSeries(self.bounds, registry, store, name)
            registry.shared_families.update(
                registry.metric_name(m).removesuffix("_total") for m in self.metrics
            )

    @classmethod
    def of(cls, registry: PerfRegistry) -> Timings:
        """The registry's one :class:`Timings`, created and registered on first use."""
        created = False

        def make() -> Timings:
            nonlocal created
            created = True
            return cls(registry)

        timings = registry.component(TIMINGS, make)
        if created:
            registry.register(timings)
        return timings

    # -- recording -------------------------------------------------------------------------------
    def record(self, name: str, seconds: float, *, error: bool = False) -> None:
        """Record one timed run of ``name`` (fail-open: never raises into the caller)."""
        try:
            label = self._timer_names(name)
            with self._lock:
                series = self._timers.get(label)
                if series is None:
                    series = self._timers[label] = self._new_series(label)
                series.hist.observe(seconds)
                series.min = min(series.min, seconds)
                series.max = max(series.max, seconds)
                if error:
                    series.errors += 1
        except Exception as exc:  # noqa: BLE001 - timing must never break the timed code
            self.registry.report_error("timing", exc)

    def count(self, name: str, value: float = 1) -> None:
        """Add ``value`` to the custom counter ``name``."""
        _check_name(name)
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(ERR_VALUE.format(value))
        label = self._counter_names(name)
        with self._lock:
            self._counters[label] = self._counters.get(label, 0) + value

    def timer(self, name: str) -> Timer:
        """A context manager (``with`` or ``async with``) timing its block as ``name``."""
        return Timer(self, _check_name(name))

    def timed(self, name: str | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator timing every call of a sync or async function (default name: its qualname)."""
        if name is not None:
            _check_name(name)

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            if not callable(func):
                raise ValueError(ERR_NOT_CALLABLE.format(func))
            if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
                raise ValueError(ERR_GENERATOR.format(func))
            label = name or f"{func.__module__}.{func.__qualname__}"
            record = self.record
            if inspect.iscoroutinefunction(func):
                afunc = cast("Callable[P, Awaitable[Any]]", func)

                @functools.wraps(func)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    start = perf_counter()
                    try:
                        result = await afunc(*args, **kwargs)
                    except BaseException:
                        record(label, perf_counter() - start, error=True)
                        raise
                    record(label, perf_counter() - start)
                    return result

                return cast("Callable[P, R]", async_wrapper)

            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                start = perf_counter()
                try:
                    result = func(*args, **kwargs)
                except BaseException:
                    record(label, perf_counter() - start, error=True)
                    raise
                record(label, perf_counter() - start)
                return result

            return wrapper

        return decorate

    # -- reading ---------------------------------------------------------------------------------
    def stats(self, name: str) -> TimerStats:
        """count, total, min, max, avg, p50, p95, p99 and errors for timer ``name`` (seconds).

        A timer that never ran reports ``count == 0`` and ``None`` for the rest. Percentiles are
        interpolated inside the histogram bucket (PromQL's method) and clamped to the exact
        ``[min, max]``, so a single fast call never reports a p99 above its own duration.
        """
        with self._lock:
            series = self._timers.get(name)
            if series is None:
                return {
                    "count": 0,
                    "total": 0.0,
                    "errors": 0,
                    "min": None,
                    "max": None,
                    "avg": None,
                    "p50": None,
                    "p95": None,
                    "p99": None,
                }
            buckets, total, count = series.hist.cumulative()
            low, high, errors = series.min, series.max, series.errors
        cumulative = [(float(le), float(n)) for le, n in buckets]

        def percentile(q: float) -> float:
            return min(max(quantile(q, cumulative), low), high)

        return {
            "count": count,
            "total": total,
            "errors": errors,
            "min": low,
            "max": high,
            "avg": total / count,
            "p50": percentile(0.5),
            "p95": percentile(0.95),
            "p99": percentile(0.99),
        }

    def names(self) -> list[str]:
        """Timer names with at least one run."""
        with self._lock:
            return sorted(self._timers)

    def counters(self) -> dict[str, float]:
        """Every custom counter's current value."""
        with self._lock:
            return dict(self._counters)

    def collect(self) -> Iterator[Metric]:
        f = self.families()
        with self._lock:
            for name, series in self._timers.items():
                add_histogram(f["app_timer_duration_seconds"], [name], series.hist)
                f["app_timer_errors_total"].add_metric([name], series.errors)
            counters = list(self._counters.items())
        for name, value in counters:
            f["app_events_total"].add_metric([name], value)
        return iter(f.values())


class Timer:
    """Times a ``with`` / ``async with`` block; an exception is recorded as an error and re-raised.

    ``elapsed`` holds the block's duration in seconds once it has exited.
    """

    __slots__ = ("_name", "_start", "_timings", "elapsed")

    def __init__(self, timings: Timings, name: str) -> None:
        self._timings = timings
        self._name = name
        self._start = 0.0
        self.elapsed: float | None = None

    def __enter__(self) -> Timer:
        self._start = perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.elapsed = perf_counter() - self._start
        self._timings.record(self._name, self.elapsed, error=exc_type is not None)

    async def __aenter__(self) -> Timer:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


__all__ = ["DEFAULT_MAX_NAMES", "Timer", "Timings"]

"""PerfRegistry: the one registry every asgi-perf component reports into."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator, Mapping, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
)

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from ._checks import check, is_int_at_least
from ._exemplars import (
    ERR_EXEMPLARS,
    ExemplarSource,
    LabelSource,
    WorkerExemplars,
    resolve_source,
)
from ._labels import OVERFLOW, SeriesCap
from ._native import NativeHistograms
from ._rows import FamilyRows, attach, current_request, to_metric
from ._shared import DEFAULT_CAPACITY, HISTOGRAM, NATIVE_CAPACITY, SharedMetric, SharedStore
from .catalogue import CATALOGUE, MetricSpec
from .compat import Compat, resolve

if TYPE_CHECKING:
    from .operations import Summary, Timer, TimerStats

logger = logging.getLogger("asgi_perf")

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_MAX_SERIES = 2000
#: The variable prometheus_client's multiprocess mode uses; asgi-perf shares the directory.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_NAMESPACE_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: How often one component may log an instrumentation error (seconds).
ERROR_LOG_INTERVAL = 60.0

ERR_NAMESPACE = "namespace must match [a-zA-Z_][a-zA-Z0-9_]* (or be empty), got {!r}"
ERR_MAX_SERIES = "max_series_per_metric must be an int >= 1, got {!r}"
ERR_UNKNOWN_METRIC = "unknown metric {!r}: every metric must be declared in asgi_perf.catalogue"
ERR_KIND = "metric {!r} is a {}, not a {}"
ERR_BUCKETS = "metric {!r} was already created with buckets {}; got {}"
ERR_PROCESS_METRICS = "process_metrics must be True, False or None, got {!r}"
ERR_PROCESS_DUPLICATE = (
    "process_metrics=True, but the registry already has prometheus_client's process, platform or "
    "GC collector ({}); leave process_metrics unset for a registry that has them"
)
ERR_NAME_CLASH = (
    "the prometheus registry passed to PerfRegistry already has metrics of these names "
    "(another library, such as prometheus-fastapi-instrumentator, or a second PerfRegistry on the "
    "same registry): {}. Keep asgi-perf on a registry of its own (PerfRegistry() without "
    "registry=, served at its own path), give it a namespace= of its own, or build one "
    "PerfRegistry per prometheus registry and share it"
)
#: The ``component`` label of a scrape-time collector that raised (its families are skipped).
COLLECT_COMPONENT = "collect"


_FAMILIES: dict[str, Callable[..., Metric]] = {
    "counter": CounterMetricFamily,
    "gauge": GaugeMetricFamily,
    "histogram": HistogramMetricFamily,
    "summary": SummaryMetricFamily,
}


class RequestHook(Protocol):
    """Per-request extension point of the HTTP middleware (used by the SQLAlchemy integration).

    ``request_started()`` runs in the request's task before the app, so a ``ContextVar`` it sets is
    visible to the app; its return value is handed to ``request_finished()`` after the app returns.
    ``request_finished`` may be a coroutine function: the middleware awaits it (bounded by its
    ``callback_timeout``) once the response is complete. Both must be cheap; exceptions are caught
    and counted, never raised into the app.
    """

    def request_started(self) -> Any: ...

    def request_finished(self, state: Any) -> Awaitable[None] | None: ...


class ComponentKey(Generic[T]):
    """The typed name of one piece of state shared through a registry.

    ``registry.component(KEY, factory)`` and ``registry.find_component(KEY)`` return the key's type,
    so whoever reads shared state gets a typed object, never ``Any`` looked up by a string. A key
    is declared once, next to the type it names; state two features share is declared here in the
    core, as a Protocol, so neither feature imports the other.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"ComponentKey({self.name!r})"


class SlowQueries(Protocol):
    """What the SQLAlchemy integration shares with the summary: its most recent slow statements
    and the same grouped by statement fingerprint (count, p95, max, last seen)."""

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]: ...

    def groups(self, limit: int | None = None) -> list[dict[str, Any]]: ...


#: The slow-query log: kept by the SQLAlchemy integration, read by the operations summary.
SLOW_QUERIES: ComponentKey[SlowQueries] = ComponentKey("sqlalchemy.slow_queries")


class BoundedMetric:
    """A prometheus_client metric with cached, capped label children.

    ``labels(*values)`` returns the cached child for the tuple (prometheus_client's own ``labels()``
    takes a lock and re-stringifies every value per call). Past the registry's series cap, new label
    tuples share one child whose values are all ``__overflow__``.
    """

    __slots__ = ("_children", "metric", "spec")

    def __init__(self, metric: Any, spec: MetricSpec, limit: int, on_overflow: Callable[[], None]):
        self.metric = metric
        self.spec = spec
        self._children: SeriesCap[Any] = SeriesCap(
            lambda key: metric.labels(*key),
            limit=limit,
            overflow_key=(OVERFLOW,) * len(spec.labels),
            on_overflow=on_overflow,
        )

    def labels(self, *values: str) -> Any:
        """The child for these label values (positional, in the catalogue's label order)."""
        if not self.spec.labels:
            return self.metric
        return self._children.get(values)

    def series(self) -> int:
        """How many label children exist (for cardinality checks)."""
        return len(self._children)


class PerfRegistry:
    """Owns one ``prometheus_client.CollectorRegistry`` and every asgi-perf metric in it.

    :param registry: the Prometheus registry to report into; a fresh one by default (pass
        ``prometheus_client.REGISTRY`` to share the process-global one).
    :param namespace: optional prefix for every metric name (``myapp`` -> ``myapp_http_...``).
    :param max_series_per_metric: hard cap on label combinations per metric; the excess is folded
        into an ``__overflow__`` series and counted in ``asgi_perf_series_overflow_total``.
    :param native_histograms: also keep Prometheus native (sparse exponential) buckets in the
        duration histograms (HTTP duration and TTFB, SQL queries, Socket.IO handlers, timers),
        served over the protobuf exposition: ``True`` for the defaults or a
        :class:`~asgi_perf.NativeHistograms` (schema, zero threshold, bucket limit, classic
        buckets kept or not). Off by default.
    :param exemplars: what duration histogram buckets carry as exemplars in OpenMetrics scrapes:
        ``True`` (the default) the current OpenTelemetry span's ``trace_id`` and ``span_id`` when
        ``opentelemetry-api`` is installed, ``False`` none, or a callable returning the labels
        (``{"trace_id": ...}``) or ``None``. Decided here, once.
    :param compat: expose the HTTP metrics the way another library does, so its dashboards keep
        answering: a preset name (``"prometheus-fastapi-instrumentator"``,
        ``"starlette-exporter"``, ``"opentelemetry"``) or a :class:`~asgi_perf.compat.Compat`.
        Applied when ``/metrics`` is rendered; the summary and dashboard keep asgi-perf's names.
    :param process_metrics: add prometheus_client's process, platform and garbage-collector
        collectors (``process_*``, ``python_info``, ``python_gc_*``). Default: on for the registry
        asgi-perf creates, off for one passed in (``prometheus_client.REGISTRY`` has them already).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "",
        max_series_per_metric: int = DEFAULT_MAX_SERIES,
        native_histograms: NativeHistograms | bool | None = None,
        exemplars: bool | LabelSource = True,
        compat: Compat | str | None = None,
        process_metrics: bool | None = None,
    ) -> None:
        if not isinstance(namespace, str) or (namespace and not _NAMESPACE_RE.match(namespace)):
            raise ValueError(ERR_NAMESPACE.format(namespace))
        check(is_int_at_least(max_series_per_metric, 1), ERR_MAX_SERIES, max_series_per_metric)
        check(isinstance(exemplars, bool) or callable(exemplars), ERR_EXEMPLARS, exemplars)
        check(
            process_metrics is None or isinstance(process_metrics, bool),
            ERR_PROCESS_METRICS,
            process_metrics,
        )
        #: How the HTTP metrics are exposed (``None``: the catalogue's names).
        self.compat: Compat | None = resolve(compat)
        self._contained: dict[int, ContainedCollector] = {}
        self.prometheus: CollectorRegistry = (
            registry if registry is not None else _ContainingRegistry(self)
        )
        self.namespace = namespace
        self.max_series_per_metric = max_series_per_metric
        #: How duration histograms keep native buckets (``None``: classic buckets only).
        self.native: NativeHistograms | None = NativeHistograms.resolve(native_histograms)
        self.started_at = time.time()
        self._lock = threading.RLock()
        self._metrics: dict[str, BoundedMetric] = {}
        self._components: dict[ComponentKey[Any], Any] = {}
        self._last_error_log: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        #: Hooks the HTTP middleware calls around every recorded request (see RequestHook).
        self.request_hooks: list[RequestHook] = []
        #: Multi-worker mode: where counters and histograms live so every worker's scrape sums
        #: them exactly (``None``: plain process memory). Set here when
        #: ``PROMETHEUS_MULTIPROC_DIR`` is, like prometheus_client's own metrics; components
        #: choose their store when they are built.
        self.shared: SharedStore | None = None
        #: Exposed family names whose values live in ``shared`` (not published in snapshots).
        self.shared_families: set[str] = set()
        directory = os.environ.get(MULTIPROC_ENV)
        if directory:
            self.shared = SharedStore(directory, self.shared_capacity())
        # Self-metrics exist from the start so a dashboard can alert on them before they move.
        self._errors = self.counter("asgi_perf_instrumentation_errors_total")
        self._overflows = self.counter("asgi_perf_series_overflow_total")
        #: Where instruments get an observation's exemplar labels; ``None``: no exemplars, and
        #: the instruments record without asking.
        self.exemplar_source: ExemplarSource | None = resolve_source(exemplars, self)
        #: Multi-worker mode: this worker's exemplars, put on the merged view it serves.
        self.worker_exemplars = WorkerExemplars()
        if process_metrics if process_metrics is not None else registry is None:
            try:
                # Each registers itself; a registry that has one already refuses the duplicate.
                ProcessCollector(registry=self.prometheus)
                PlatformCollector(registry=self.prometheus)
                GCCollector(registry=self.prometheus)
            except ValueError as exc:
                raise ValueError(ERR_PROCESS_DUPLICATE.format(exc)) from None

    def shared_capacity(self) -> int:
        """Slots of this registry's shared-memory file in multi-worker mode: native histogram
        series take a larger run each (the file is sparse either way)."""
        return DEFAULT_CAPACITY if self.native is None else NATIVE_CAPACITY

    # -- names and specs -------------------------------------------------------------------------
    def metric_name(self, name: str) -> str:
        """The exposed name of a catalogue metric (namespace applied)."""
        return f"{self.namespace}_{name}" if self.namespace else name

    def spec(self, name: str) -> MetricSpec:
        """The catalogue entry for ``name``; ``ValueError`` for a name not in the catalogue."""
        try:
            return CATALOGUE[name]
        except KeyError:
            raise ValueError(ERR_UNKNOWN_METRIC.format(name)) from None

    def family(self, name: str, extra_labels: Sequence[str] = ()) -> Metric:
        """An empty metric family for catalogue metric ``name`` (its type, exposed name, help and
        labels, then ``extra_labels``), for scrape-time collectors to fill with ``add_metric``."""
        spec = self.spec(name)
        labels = [*spec.labels, *extra_labels]
        return _FAMILIES[spec.kind](self.metric_name(name), spec.help, labels=labels)

    # -- native metrics --------------------------------------------------------------------------
    def counter(self, name: str) -> BoundedMetric:
        """The registry's counter ``name`` (created on first use, then shared)."""
        return self._metric(name, "counter", None)

    def gauge(self, name: str) -> BoundedMetric:
        """The registry's gauge ``name`` (created on first use, then shared)."""
        return self._metric(name, "gauge", None)

    def histogram(self, name: str, buckets: Sequence[float] | None = None) -> BoundedMetric:
        """The registry's histogram ``name``; ``buckets`` default to the catalogue's."""
        return self._metric(name, "histogram", buckets)

    def _metric(self, name: str, kind: str, buckets: Sequence[float] | None) -> BoundedMetric:
        spec = self.spec(name)
        if spec.kind != kind:
            raise ValueError(ERR_KIND.format(name, spec.kind, kind))
        want = tuple(float(b) for b in buckets) if buckets is not None else None
        with self._lock, self._clash():
            existing = self._metrics.get(name)
            if existing is not None:
                have = existing.spec.buckets
                if want is not None and have is not None and want != tuple(map(float, have)):
                    raise ValueError(ERR_BUCKETS.format(name, have, want))
                return existing
            full = self.metric_name(name)
            labels = list(spec.labels)
            metric: Any
            if self.shared is not None and kind != "gauge":
                use = want if want is not None else spec.buckets
                family = full.removesuffix("_total") if kind == "counter" else full
                bounds = tuple(float(b) for b in use or ()) if kind == HISTOGRAM else ()
                if bounds and bounds[-1] == float("inf"):
                    bounds = bounds[:-1]
                metric = SharedMetric(self.shared, family, kind, spec.help, labels, bounds)
                self.prometheus.register(metric)
                self.shared_families.add(family)
                if want is not None:
                    spec = MetricSpec(
                        spec.name, spec.kind, spec.help, spec.labels, want, spec.component
                    )
            elif kind == "counter":
                metric = Counter(
                    full.removesuffix("_total"), spec.help, labels, registry=self.prometheus
                )
            elif kind == "gauge":
                metric = Gauge(full, spec.help, labels, registry=self.prometheus)
            else:
                use = want if want is not None else spec.buckets
                metric = Histogram(
                    full, spec.help, labels, registry=self.prometheus, buckets=use or ()
                )
                if want is not None:
                    spec = MetricSpec(
                        spec.name, spec.kind, spec.help, spec.labels, want, spec.component
                    )
            bounded = BoundedMetric(metric, spec, self.max_series_per_metric, self._overflow(name))
            self._metrics[name] = bounded
            return bounded

    def _overflow(self, name: str) -> Callable[[], None]:
        def count() -> None:
            self.count_overflow(name)

        return count

    # -- collectors and shared component state ---------------------------------------------------
    def register(self, collector: Collector) -> None:
        """Register a scrape-time collector in the Prometheus registry.

        The collector is *contained*: if its ``collect()`` raises, its families are left out of
        that scrape (and of the summary, the monitor's snapshot, a push), the error is counted in
        ``asgi_perf_instrumentation_errors_total{component="collect"}`` and logged at most once a
        minute; everything else is still served.
        """
        prometheus = self.prometheus
        if isinstance(prometheus, _ContainingRegistry):
            prometheus.register(collector)  # contains every collector, however registered
            return
        with self._clash():
            prometheus.register(self._contain(collector, prometheus))

    @contextlib.contextmanager
    def _clash(self) -> Iterator[None]:
        """prometheus_client's "Duplicated timeseries" on a shared registry, explained."""
        try:
            yield
        except ValueError as exc:
            text = str(exc)
            if not text.startswith("Duplicated timeseries"):
                raise
            names = text.partition(":")[2].strip()
            raise ValueError(ERR_NAME_CLASH.format(names)) from exc

    def unregister(self, collector: Collector) -> None:
        """Remove a collector registered with :meth:`register`."""
        prometheus = self.prometheus
        if isinstance(prometheus, _ContainingRegistry):
            prometheus.unregister(collector)
            return
        with self._lock:
            wrapper = self._contained.pop(id(collector), None)
        prometheus.unregister(wrapper if wrapper is not None else collector)

    def _contain(self, collector: Collector, prometheus: CollectorRegistry) -> Collector:
        if isinstance(collector, ContainedCollector):
            return collector
        with self._lock:
            wrapper = self._contained.get(id(collector))
            if wrapper is None or wrapper.collector is not collector:
                auto = bool(getattr(prometheus, "_auto_describe", False))
                wrapper = self._contained[id(collector)] = ContainedCollector(collector, self, auto)
            return wrapper

    def component(self, key: ComponentKey[T], factory: Callable[[], T]) -> T:
        """Get-or-create the one shared state object ``key`` names for this registry.

        Components (the HTTP accumulator, the slow-query log, ...) live here rather than in module
        globals, so two middlewares on one registry share one set of series.
        """
        with self._lock:
            try:
                return cast("T", self._components[key])
            except KeyError:
                value = self._components[key] = factory()
                return value

    def find_component(self, key: ComponentKey[T]) -> T | None:
        """The shared state ``key`` names if a component created it, else ``None``."""
        return cast("T | None", self._components.get(key))

    # -- operations: custom timing, stats, summary (thin delegates; see asgi_perf.operations) -----
    def timed(self, name: str | None = None) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Decorator timing each call of a sync or async function as timer ``name``."""
        from .operations import Timings

        return Timings.of(self).timed(name)

    def timer(self, name: str) -> Timer:
        """Context manager (``with`` / ``async with``) timing its block as timer ``name``."""
        from .operations import Timings

        return Timings.of(self).timer(name)

    def count(self, name: str, value: float = 1) -> None:
        """Add ``value`` (default 1) to the custom counter ``name``."""
        from .operations import Timings

        Timings.of(self).count(name, value)

    def stats(self, name: str) -> TimerStats:
        """count, total, min, max, avg, p50/p95/p99 (seconds) and errors of timer ``name``."""
        from .operations import Timings

        return Timings.of(self).stats(name)

    def summary(self, window: float | None = None) -> Summary:
        """One JSON-able dict of every component's key figures; ``window=N``: rates and
        percentiles over the last N seconds (or a little more; at most 300).

        See :func:`asgi_perf.operations.build_summary`.
        """
        from .operations import build_summary

        return build_summary(self, window)

    def push(
        self,
        gateway: str,
        job: str,
        *,
        grouping_key: Mapping[str, str] | None = None,
        method: Literal["put", "add"] = "put",
        timeout: float = 10.0,
        basic_auth: tuple[str, str] | None = None,
        handler: Callable[..., Callable[[], None]] | None = None,
    ) -> None:
        """Push everything this registry exposes to a Pushgateway (:func:`asgi_perf.export.push`).

        ``ValueError`` for a bad argument; :class:`asgi_perf.export.PushError` if the push fails.
        """
        from .export import push

        push(
            self,
            gateway,
            job,
            grouping_key=grouping_key,
            method=method,
            timeout=timeout,
            basic_auth=basic_auth,
            handler=handler,
        )

    # -- self-observation ------------------------------------------------------------------------
    def count_overflow(self, name: str) -> None:
        """Count one observation folded into ``name``'s overflow series."""
        self._overflows.metric.labels(name).inc()

    def report_error(self, component: str, exc: BaseException, *, log: bool = True) -> None:
        """Record an error inside instrumentation: counted always, logged at most once a minute
        (``log=False``: counted only, for a caller that logs on its own terms).

        Never raises: this is what the fail-open paths call.
        """
        try:
            self._errors.labels(component).inc()
            if not log:
                return
            now = time.monotonic()
            last = self._last_error_log.get(component)
            if last is not None and now - last < ERROR_LOG_INTERVAL:
                self._suppressed[component] = self._suppressed.get(component, 0) + 1
                return
            self._last_error_log[component] = now
            suppressed = self._suppressed.pop(component, 0)
            logger.warning(
                "asgi-perf instrumentation error in %s (the application was not affected; "
                "%d similar errors suppressed since the last report): %s: %s",
                component,
                suppressed,
                type(exc).__name__,
                exc,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        except Exception:  # noqa: BLE001, S110 - the error path itself must never raise
            pass


class ContainedCollector(Collector):
    """Runs one collector so that its failure stays its own.

    ``collect()`` gathers the collector's families in full; if that raises, the collector is
    skipped for this scrape and the error reported to the registry (counted, logged at most once
    a minute). A half-collected collector yields nothing rather than an inconsistent part.
    """

    __slots__ = ("_auto_describe", "_registry", "_rows", "collector")

    def __init__(self, collector: Collector, registry: PerfRegistry, auto_describe: bool) -> None:
        self.collector = collector
        self._registry = registry
        self._auto_describe = auto_describe
        self._rows = collector if isinstance(collector, CatalogueCollector) else None
        if self._rows is not None and not self._rows.has_rows():
            self._rows = None

    def collect(self) -> Iterator[Metric]:
        request = current_request()
        try:
            if request is not None and self._rows is not None:
                # A reader that asked for rows (see asgi_perf._rows): no Sample objects for it.
                rows = self._rows.rows(request.skip)
                if request.sink is not None:
                    request.sink.extend(rows)
                    return iter(())
                registry = self._rows.registry
                family = registry.family
                if request.attach:
                    spec = registry.spec
                    return iter(
                        [attach(r, family, (*spec(r.name).labels, *r.extra_labels)) for r in rows]
                    )
                return iter([to_metric(r, family) for r in rows])
            families = list(self.collector.collect())
        except Exception as exc:  # noqa: BLE001 - one collector must not fail the whole scrape
            self._registry.report_error(COLLECT_COMPONENT, exc)
            return iter(())
        return iter(families)

    def describe(self) -> Iterator[Metric]:
        # What prometheus_client would have asked the collector itself, so duplicate names are
        # refused exactly as before.
        describe = getattr(self.collector, "describe", None)
        if describe is not None:
            return iter(describe())
        return self.collect() if self._auto_describe else iter(())


class _ContainingRegistry(CollectorRegistry):
    """The default prometheus registry of a PerfRegistry: every collector registered in it (by
    :meth:`PerfRegistry.register`, prometheus_client's metric classes or the application) is a
    :class:`ContainedCollector`, so one raising at scrape time cannot fail the scrape."""

    def __init__(self, perf: PerfRegistry) -> None:
        super().__init__()
        self._perf = perf

    def register(self, collector: Collector) -> None:
        super().register(self._perf._contain(collector, self))

    def unregister(self, collector: Collector) -> None:
        perf = self._perf
        if not isinstance(collector, ContainedCollector):
            with perf._lock:
                wrapper = perf._contained.get(id(collector))
                if wrapper is not None and wrapper.collector is collector:
                    del perf._contained[id(collector)]
                    collector = wrapper
        super().unregister(collector)


class CatalogueCollector(Collector):
    """The base of every scrape-time collector: everything it exports is a catalogue metric.

    A subclass names the catalogue metrics it exports in :attr:`metrics` (in exposition order)
    and fills, in ``collect()``, the empty families :meth:`families` builds. Each family's exposed
    name (namespace applied), type, help text and label names come from the catalogue through
    :meth:`PerfRegistry.family`, so a collector cannot drift from the catalogue, the docs' metric
    reference, the Prometheus rules or the Grafana dashboard. ``describe()`` yields the same
    families empty, without reading any owner: prometheus_client calls it on ``register`` to
    refuse duplicate names, and must not consume, say, a CPU window or touch a pool.
    """

    #: The catalogue names this collector exports, in exposition order.
    metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, registry: PerfRegistry) -> None:
        self.registry = registry

    def families(self) -> dict[str, Any]:
        """One empty family per exported metric, keyed by catalogue name, to fill with
        ``add_metric``."""
        return {name: self.registry.family(name) for name in self.metrics}

    def rows(self, skip: Container[str] = frozenset()) -> list[FamilyRows]:
        """The exported series as plain values (see :mod:`asgi_perf._rows`), one entry per
        metric in :attr:`metrics` order, the ``skip``-ped ones left out and not computed.

        A subclass implements either this (and ``collect()`` is built from it) or ``collect()``.
        """
        raise NotImplementedError

    @classmethod
    def has_rows(cls) -> bool:
        """Whether the class hands its series over as rows."""
        return cls.rows is not CatalogueCollector.rows

    def collect(self) -> Iterable[Metric]:
        family = self.registry.family
        return [to_metric(r, family) for r in self.rows()]

    def describe(self) -> Iterator[Metric]:
        return iter(self.families().values())

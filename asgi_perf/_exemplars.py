"""Exemplars: the trace a duration observation belongs to, attached to its histogram bucket.

A registry resolves its exemplar source once, at construction (:func:`resolve_source`):

- ``exemplars=True`` (the default): OpenTelemetry's current span when ``opentelemetry-api`` is
  importable; without it there is no source at all, so the instruments build their plain
  recorders and the request path runs no exemplar code;
- ``exemplars=False``: none;
- a callable ``() -> Mapping[str, str] | None``: the caller's own labels (a request id, a trace
  id read from a header by their middleware), checked on every call it returns something.

A source returns the exemplar's labels, or ``None`` (no span, nothing to attach), which is the
common case and costs one check. Instruments keep the latest exemplar per bucket of each series
(:meth:`~asgi_perf._histogram.PlainHistogram.put_exemplar`): a bounded store, allocated with a
series' first exemplar, never on a request without one.
"""

from __future__ import annotations

import contextvars
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar

from ._histogram import PlainHistogram, bucket_labels
from ._native import NativeHistogram, NativeHistograms
from ._shared import SharedPlainHistogram, SharedStore
from ._shared_native import SharedNativeHistogram

if TYPE_CHECKING:
    from .registry import PerfRegistry

#: What a caller passes as ``exemplars=``: returns the exemplar's labels, or ``None`` for none.
LabelSource = Callable[[], "Mapping[str, str] | None"]
#: A registry's resolved source: a private dict of checked labels, or ``None``.
ExemplarSource = Callable[[], "dict[str, str] | None"]

#: OpenMetrics: the names and values of an exemplar's labels together hold at most 128 runes.
MAX_EXEMPLAR_RUNES = 128

#: The component errors of a caller's exemplar source are counted under.
EXEMPLAR_COMPONENT = "exemplars"

ERR_EXEMPLARS = (
    "exemplars must be True (OpenTelemetry's current span, when opentelemetry-api is installed), "
    "False, or a callable returning a mapping of label names to values (or None), got {!r}"
)
ERR_EXEMPLAR_LABELS = (
    "an exemplar source must return None or a mapping of label names to string values, got {!r}"
)
ERR_EXEMPLAR_NAME = "exemplar label name {!r} is not a valid Prometheus label name"
ERR_EXEMPLAR_RUNES = (
    "exemplar labels hold {} runes (names and values together); OpenMetrics allows at most 128"
)

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def opentelemetry_source() -> ExemplarSource | None:
    """The current OpenTelemetry span's ``trace_id`` and ``span_id``, or ``None`` when
    ``opentelemetry-api`` is not importable.

    Only a sampled span gives an exemplar: an id whose trace is never exported would lead
    nowhere.
    """
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    get_current_span = trace.get_current_span

    def span_ids() -> dict[str, str] | None:
        span = get_current_span()
        # Sampled, not "recording": OpenTelemetry's ASGI middleware ends its server span with the
        # last body byte, before the request is recorded; the span is still the request's, and
        # exported. A span that is not sampled (or the invalid span) leads nowhere.
        context = span.get_span_context()
        if not context.trace_flags.sampled:
            return None
        return {
            "trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x"),
        }

    span_in = _span_lookup()
    if span_in is None:
        return span_ids
    get_context, key = span_in

    def current_span() -> dict[str, str] | None:
        # With no span in the context this is the one check a request pays.
        if get_context().get(key) is None:
            return None
        return span_ids()

    # The check itself, for a hot path to make without calling this function (see span_gate).
    current_span.gate = span_in  # type: ignore[attr-defined]
    return current_span


def span_gate(
    source: ExemplarSource,
) -> tuple[Callable[[], Mapping[str, object]] | None, str]:
    """``(get_context, key)`` such that ``source()`` is ``None`` whenever
    ``get_context().get(key)`` is: a caller on a hot path makes that check (two C calls) and
    calls ``source`` only when it passes. ``(None, "")`` for a source without such a check."""
    gate = getattr(source, "gate", None)
    if gate is None:
        return None, ""
    get_context, key = gate
    return get_context, key


def _span_lookup() -> tuple[Callable[[], Mapping[str, object]], str] | None:
    """``(ContextVar.get, span key)``: whether the current context holds a span, read straight
    from OpenTelemetry's context variable: a third of the cost of ``get_current_span()``, which is
    what every request outside a span pays. It reads OpenTelemetry internals, so it is used only
    if they are there (the default runtime context) and a probe in a fresh context agrees with
    the public API; otherwise ``None``, and the public API answers."""
    try:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace.propagation import _SPAN_KEY

        otel_context.get_current()  # older releases load the runtime context on first use
        var = otel_context._RUNTIME_CONTEXT._current_context  # type: ignore[attr-defined]
        if not isinstance(var, contextvars.ContextVar) or not isinstance(_SPAN_KEY, str):
            return None
        get_context: Callable[[], Mapping[str, object]] = var.get
        probe = trace.NonRecordingSpan(
            trace.SpanContext(1, 1, is_remote=False, trace_flags=trace.TraceFlags(1))
        )

        def agrees() -> bool:
            otel_context.attach(otel_context.Context())
            empty = get_context().get(_SPAN_KEY) is None
            empty = empty and trace.get_current_span() is trace.INVALID_SPAN
            otel_context.attach(trace.set_span_in_context(probe))
            held = get_context().get(_SPAN_KEY) is probe is trace.get_current_span()
            return empty and held

        if not contextvars.Context().run(agrees):
            return None
    except Exception:  # noqa: BLE001 - any surprise: the public API answers instead
        return None
    return get_context, _SPAN_KEY


def check_labels(labels: object) -> dict[str, str]:
    """A private copy of ``labels`` if they make a valid exemplar; ``ValueError`` otherwise."""
    if not isinstance(labels, Mapping):
        raise ValueError(ERR_EXEMPLAR_LABELS.format(labels))
    copy: dict[str, str] = {}
    runes = 0
    for name, value in labels.items():
        if not isinstance(name, str) or not _LABEL_NAME.match(name):
            raise ValueError(ERR_EXEMPLAR_NAME.format(name))
        if not isinstance(value, str):
            raise ValueError(ERR_EXEMPLAR_LABELS.format(labels))
        runes += len(name) + len(value)
        copy[name] = value
    if runes > MAX_EXEMPLAR_RUNES:
        raise ValueError(ERR_EXEMPLAR_RUNES.format(runes))
    return copy


def checked_source(source: LabelSource, registry: PerfRegistry) -> ExemplarSource:
    """``source`` made safe for the request path: what it raises or returns wrong is counted
    (``asgi_perf_instrumentation_errors_total{component="exemplars"}``) and gives no exemplar."""

    def checked() -> dict[str, str] | None:
        try:
            labels = source()
            if not labels:
                return None
            return check_labels(labels)
        except Exception as exc:  # noqa: BLE001 - a caller's source never breaks a request
            registry.report_error(EXEMPLAR_COMPONENT, exc)
            return None

    return checked


def resolve_source(exemplars: object, registry: PerfRegistry) -> ExemplarSource | None:
    """The registry's exemplar source, decided once; ``None`` when there is none."""
    if exemplars is True:
        return opentelemetry_source()
    if exemplars is False:
        return None
    if not callable(exemplars):
        raise ValueError(ERR_EXEMPLARS.format(exemplars))
    return checked_source(exemplars, registry)


class ExemplarHistogram(PlainHistogram):
    """A :class:`PlainHistogram` that asks ``source`` at each observation and keeps the labels it
    returns as the bucket's exemplar. Built instead of the plain class, at construction, only for
    a registry that has a source, so the plain ``observe`` stays as it was everywhere else."""

    __slots__ = ("_source",)

    def __init__(self, bounds: tuple[float, ...], source: ExemplarSource) -> None:
        super().__init__(bounds)
        self._source = source

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        labels = self._source()
        if labels is not None:
            self.put_exemplar(value, labels)


class NativeExemplarHistogram(NativeHistogram):
    """A :class:`~asgi_perf._native.NativeHistogram` that keeps exemplars like
    :class:`ExemplarHistogram` (both native buckets and an exemplar source configured)."""

    __slots__ = ("_source",)

    def __init__(
        self,
        bounds: tuple[float, ...],
        native: NativeHistograms,
        source: ExemplarSource,
    ) -> None:
        assert native.schema is not None
        super().__init__(
            bounds if native.classic else (),
            native.schema,
            native.zero_threshold,
            native.max_buckets,
        )
        self._source = source

    def observe(self, value: float) -> None:
        super().observe(value)
        labels = self._source()
        if labels is not None:
            self.put_exemplar(value, labels)


def histogram_class(registry: PerfRegistry) -> Callable[[tuple[float, ...]], PlainHistogram]:
    """What a feature builds its duration histograms with, as the registry says: the plain
    class, one that also keeps native buckets, one that keeps exemplars, or both."""
    source = registry.exemplar_source
    native = registry.native
    if native is not None:
        if source is None:
            return native.histogram
        return partial(NativeExemplarHistogram, native=native, source=source)
    if source is None:
        return PlainHistogram
    return partial(ExemplarHistogram, source=source)


_BucketKey = tuple[tuple[str, str], ...]


class WorkerExemplars:
    """Multi-worker mode: this worker's latest exemplar per bucket of its shared-memory series.

    The counts live in shared files that any worker's scrape merges; an exemplar is one request's
    and stays with the worker that served it. :meth:`attach` puts this worker's exemplars on the
    merged view it serves, so each scrape shows the exemplars of the worker that answered it.
    Bounded like the series: one entry per bucket of a series this worker has written to.
    """

    def __init__(self) -> None:
        # "<family>_bucket" -> sorted label pairs with ``le`` -> exemplar
        self._kept: dict[str, dict[_BucketKey, Exemplar]] = {}

    def put(
        self,
        family: str,
        labels: Iterable[tuple[str, str]],
        bounds: tuple[float, ...],
        value: float,
        exemplar: dict[str, str],
    ) -> None:
        i = bisect_left(bounds, value)
        le = bucket_labels(bounds)[i] if i < len(bounds) else "+Inf"
        key = tuple(sorted((*labels, ("le", le))))
        kept = self._kept.get(family + "_bucket")
        if kept is None:
            kept = self._kept[family + "_bucket"] = {}
        kept[key] = Exemplar(exemplar, value, time.time())

    def attach(self, metrics: Iterable[Metric]) -> Iterator[Metric]:
        """``metrics`` with this worker's exemplars on their bucket samples."""
        if not self._kept:
            yield from metrics
            return
        for metric in metrics:
            kept = self._kept.get(metric.name + "_bucket")
            if kept and metric.type == "histogram":
                samples = metric.samples
                for i, sample in enumerate(samples):
                    if sample.name.endswith("_bucket"):
                        found = kept.get(tuple(sorted(sample.labels.items())))
                        if found is not None:
                            samples[i] = sample._replace(exemplar=found)
            yield metric


class _SharedExemplars:
    """What a shared histogram of a registry with an exemplar source adds to its base: the counts
    go to shared memory as the base writes them, the exemplar to this worker's
    :class:`WorkerExemplars`. Listed before the base class, so ``observe`` wraps the base's."""

    __slots__ = ()

    _source: ExemplarSource
    _exemplars: WorkerExemplars
    _family: str
    _labels: list[tuple[str, str]]
    bounds: tuple[float, ...]

    def observe(self, value: float) -> None:
        super().observe(value)  # type: ignore[misc]
        labels = self._source()
        if labels is not None:
            self._exemplars.put(self._family, self._labels, self.bounds, value, labels)


class SharedExemplarHistogram(_SharedExemplars, SharedPlainHistogram):
    """:class:`SharedPlainHistogram` of a registry with an exemplar source."""

    __slots__ = ("_exemplars", "_source")

    def __init__(
        self,
        bounds: tuple[float, ...],
        store: SharedStore,
        family: str,
        help_text: str,
        labels: Sequence[tuple[str, str]],
        *,
        source: ExemplarSource,
        exemplars: WorkerExemplars,
    ) -> None:
        super().__init__(bounds, store, family, help_text, labels)
        self._source = source
        self._exemplars = exemplars


class SharedNativeExemplarHistogram(_SharedExemplars, SharedNativeHistogram):
    """:class:`~asgi_perf._shared_native.SharedNativeHistogram` of a registry with an exemplar
    source; the exemplar goes on the classic bucket (``+Inf`` when classic buckets are off)."""

    __slots__ = ("_exemplars", "_source")

    def __init__(
        self,
        bounds: tuple[float, ...],
        store: SharedStore,
        family: str,
        help_text: str,
        labels: Sequence[tuple[str, str]],
        *,
        native: NativeHistograms,
        source: ExemplarSource,
        exemplars: WorkerExemplars,
    ) -> None:
        super().__init__(bounds, store, family, help_text, labels, native=native)
        self._source = source
        self._exemplars = exemplars


SharedHistogramFactory = Callable[
    [tuple[float, ...], SharedStore, str, str, Sequence[tuple[str, str]]], SharedPlainHistogram
]


def shared_histogram_class(registry: PerfRegistry) -> SharedHistogramFactory:
    """:func:`histogram_class` for multi-worker mode."""
    source = registry.exemplar_source
    native = registry.native
    if native is not None:
        if source is None:
            return partial(SharedNativeHistogram, native=native)
        return partial(
            SharedNativeExemplarHistogram,
            native=native,
            source=source,
            exemplars=registry.worker_exemplars,
        )
    if source is None:
        return SharedPlainHistogram
    return partial(SharedExemplarHistogram, source=source, exemplars=registry.worker_exemplars)


__all__ = [
    "ERR_EXEMPLARS",
    "ERR_EXEMPLAR_LABELS",
    "ERR_EXEMPLAR_NAME",
    "ERR_EXEMPLAR_RUNES",
    "EXEMPLAR_COMPONENT",
    "MAX_EXEMPLAR_RUNES",
    "ExemplarHistogram",
    "ExemplarSource",
    "LabelSource",
    "SharedExemplarHistogram",
    "SharedHistogramFactory",
    "SharedNativeExemplarHistogram",
    "WorkerExemplars",
    "check_labels",
    "checked_source",
    "histogram_class",
    "opentelemetry_source",
    "resolve_source",
    "shared_histogram_class",
]

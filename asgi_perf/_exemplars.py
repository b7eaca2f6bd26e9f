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

import re
from bisect import bisect_left
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from ._histogram import PlainHistogram

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
    invalid = trace.INVALID_SPAN

    def current_span() -> dict[str, str] | None:
        span = get_current_span()
        # With no span in the context this is the one check a request pays.
        if span is invalid:
            return None
        # Sampled, not "recording": OpenTelemetry's ASGI middleware ends its server span with the
        # last body byte, before the request is recorded; the span is still the request's, and
        # exported. A span that is not sampled leads nowhere.
        context = span.get_span_context()
        if not context.trace_flags.sampled:
            return None
        return {
            "trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x"),
        }

    return current_span


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


def histogram_class(registry: PerfRegistry) -> Callable[[tuple[float, ...]], PlainHistogram]:
    """What a feature builds its duration histograms with: the plain class, or one that keeps
    exemplars when the registry has a source."""
    source = registry.exemplar_source
    if source is None:
        return PlainHistogram
    return partial(ExemplarHistogram, source=source)


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
    "check_labels",
    "checked_source",
    "histogram_class",
    "opentelemetry_source",
    "resolve_source",
]

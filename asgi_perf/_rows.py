"""Rows: a collector's series as plain values, beside ``collect()``.

prometheus_client's ``collect()`` builds a ``Metric`` and one ``Sample`` (a dict of labels each)
per sample: 1-2 µs each, 47 samples per HTTP (method, route, status). A reader that wants the
numbers, not the exposition objects (the JSON summary, the multi-worker publish), pays that for
nothing. A collector that can hand its series over as :class:`FamilyRows` implements
``rows(skip)``; its ``collect()`` is then built from the same rows (:func:`to_metric`), so the two
can never disagree, and prometheus_client's ``generate_latest`` and every other reader of
``collect()`` see what they always saw.

A reader asks for rows for the duration of one ``collect()`` pass with :func:`reading_rows`: the
registry's contained collectors that have rows put them into the reader's ``sink`` (and yield no
families), or, without a sink, yield their families built from rows minus the ``skip``-ped
metrics, which the collector then does not compute at all.

Row values by kind: counter and gauge a number; histogram ``(cumulative counts, sum)`` with one
count per bound of the family's ``bounds`` and the ``+Inf`` count last (the series' count);
summary ``(count, sum)``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from prometheus_client.metrics_core import Metric

from ._histogram import bucket_labels

#: Row label values in the catalogue's label order.
LabelValues = tuple[str, ...]


@dataclass
class FamilyRows:
    """One catalogue metric's series: ``rows`` of ``(label values, value)``."""

    name: str
    kind: str
    rows: list[tuple[LabelValues, Any]] = field(default_factory=list)
    #: A histogram's upper bounds, without ``+Inf``.
    bounds: tuple[float, ...] = ()
    #: Label names after the catalogue's (the HTTP middleware's ``labels=`` / ``label_from=``);
    #: row label values hold the catalogue's labels, then these.
    extra_labels: tuple[str, ...] = ()
    #: A histogram's exemplars by row label values, one entry per bucket (``None`` where a
    #: bucket has none); only series that have any are listed.
    exemplars: dict[LabelValues, list[Any]] = field(default_factory=dict)


@dataclass
class RowsRequest:
    """What one ``collect()`` pass asks of collectors that have rows."""

    #: Where their rows go (they then yield no families); ``None``: yield families as usual.
    sink: list[FamilyRows] | None = None
    #: Catalogue names the reader does not want: neither computed nor yielded.
    skip: Container[str] = frozenset()
    #: Yield each family empty, its rows attached (:func:`attached`), for a reader that renders
    #: rows itself (the fast text renderer) and keeps the registry's family order.
    attach: bool = False


_REQUEST: contextvars.ContextVar[RowsRequest | None] = contextvars.ContextVar(
    "asgi_perf_rows", default=None
)


@contextlib.contextmanager
def reading_rows(request: RowsRequest | None) -> Iterator[RowsRequest | None]:
    """Within the block (this thread or task only), collectors with rows answer ``request``
    (``None``: they yield their families as usual)."""
    token = _REQUEST.set(request)
    try:
        yield request
    finally:
        _REQUEST.reset(token)


def current_request() -> RowsRequest | None:
    """The request of the ``collect()`` pass running in this context, if any."""
    return _REQUEST.get()


class Attached(NamedTuple):
    """The rows carried by a family yielded to an ``attach`` request, with their label names."""

    rows: FamilyRows
    labelnames: tuple[str, ...]


_ATTACHED = "_asgi_perf_rows"


def attach(
    rows: FamilyRows,
    family: Callable[[str, tuple[str, ...]], Metric],
    labelnames: tuple[str, ...],
) -> Metric:
    """The empty family of ``rows`` (``family(name, extra labels)``) carrying them, with every
    label name of their rows (see :func:`attached`)."""
    metric = family(rows.name, rows.extra_labels)
    setattr(metric, _ATTACHED, Attached(rows, labelnames))
    return metric


def attached(metric: Metric) -> Attached | None:
    """The rows a family carries instead of samples, if it does."""
    return getattr(metric, _ATTACHED, None)


def materialize(metric: Metric) -> Metric:
    """``metric`` with its samples: an attached family's rows become samples (for a reader that
    rewrites families, such as a compat view); any other family is returned as it is."""
    carried = attached(metric)
    if carried is None:
        return metric
    delattr(metric, _ATTACHED)
    return _fill(metric, carried.rows)


def to_metric(rows: FamilyRows, family: Callable[[str, tuple[str, ...]], Metric]) -> Metric:
    """The prometheus_client family of ``rows``; ``family(name, extra labels)`` builds it empty
    (the registry's :meth:`~asgi_perf.registry.PerfRegistry.family`)."""
    return _fill(family(rows.name, rows.extra_labels), rows)


def _fill(empty: Metric, rows: FamilyRows) -> Metric:
    metric: Any = empty
    kind = rows.kind
    if kind == "histogram":
        les = (*bucket_labels(rows.bounds), "+Inf")
        exemplars = rows.exemplars
        for labels, (cumulative, total) in rows.rows:
            buckets: list[Any] = list(zip(les, cumulative, strict=True))
            kept = exemplars.get(labels) if exemplars else None
            if kept is not None:
                buckets = [
                    bucket if exemplar is None else (*bucket, exemplar)
                    for bucket, exemplar in zip(buckets, kept, strict=True)
                ]
            metric.add_metric(labels, buckets, total)
    elif kind == "summary":
        for labels, (count, total) in rows.rows:
            metric.add_metric(labels, count, total)
    else:
        for labels, value in rows.rows:
            metric.add_metric(labels, value)
    return metric  # type: ignore[no-any-return]


__all__ = [
    "Attached",
    "FamilyRows",
    "LabelValues",
    "RowsRequest",
    "attach",
    "attached",
    "current_request",
    "materialize",
    "reading_rows",
    "to_metric",
]

"""The fast renderer writes families handed over as rows exactly as their samples would be."""

from __future__ import annotations

from collections.abc import Container, Iterator
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest

from asgi_perf import PerfMiddleware, PerfRegistry
from asgi_perf._rows import FamilyRows, RowsRequest, attached, reading_rows
from asgi_perf.export._render import FastRenderer, RenderError
from asgi_perf.http._stats import HTTP_STATS
from asgi_perf.registry import CatalogueCollector

from .test_render import LABEL_VALUES, NON_NEGATIVE, VALUES, parsed

# One catalogue metric of each kind (their label names come from the catalogue).
COUNTER, GAUGE = "http_requests_total", "http_requests_in_progress"
SUMMARY, HISTOGRAM = "http_request_size_bytes", "http_request_duration_seconds"
LABELS = {COUNTER: 3, GAUGE: 1, SUMMARY: 2, HISTOGRAM: 3}


class Drawn(CatalogueCollector):
    """Hands over drawn rows, as the package's collectors hand over theirs."""

    metrics: ClassVar[tuple[str, ...]] = (COUNTER, GAUGE, SUMMARY, HISTOGRAM)

    def __init__(self, registry: PerfRegistry, families: list[FamilyRows]) -> None:
        super().__init__(registry)
        self.drawn = families

    def rows(self, skip: Container[str] = frozenset()) -> list[FamilyRows]:
        return [f for f in self.drawn if f.name not in skip]


class Snapshot:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _series(name: str) -> Any:
    return st.lists(st.tuples(*[LABEL_VALUES] * LABELS[name]), max_size=3, unique_by=lambda r: r)


@st.composite
def families(draw: Any) -> list[FamilyRows]:
    counter = FamilyRows(
        COUNTER, "counter", [(v, draw(NON_NEGATIVE)) for v in draw(_series(COUNTER))]
    )
    gauge = FamilyRows(GAUGE, "gauge", [(v, draw(VALUES)) for v in draw(_series(GAUGE))])
    summary = FamilyRows(
        SUMMARY,
        "summary",
        [(v, (draw(NON_NEGATIVE), draw(VALUES))) for v in draw(_series(SUMMARY))],
    )
    bounds = tuple(sorted(set(draw(st.lists(st.floats(-1e9, 1e9), max_size=4)))))
    histogram = FamilyRows(HISTOGRAM, "histogram", bounds=bounds)
    for values in draw(_series(HISTOGRAM)):
        counts = sorted(draw(st.lists(st.integers(0, 10**7), min_size=len(bounds) + 1)))
        cumulative: list[Any] = counts[: len(bounds) + 1]
        if draw(st.booleans()):
            cumulative = [float(c) for c in cumulative]  # shared memory holds floats
        histogram.rows.append((values, (cumulative, draw(VALUES))))
    drawn = [counter, gauge, summary, histogram]
    chosen: list[FamilyRows] = draw(st.permutations(drawn))
    return chosen[: draw(st.integers(1, 4))]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=families(), namespace=st.sampled_from(["", "shop"]))
def test_rows_render_as_their_samples(drawn: list[FamilyRows], namespace: str) -> None:
    """Random rows of every kind (escapes, NaN/±Inf, ints and floats, negative bucket bounds):
    the rows path writes byte for byte what the fast renderer writes from the samples collect()
    builds of the same rows, and prometheus_client's parsers read from it what generate_latest
    writes, in both formats, cold and warm."""
    # Without the process and GC collectors, whose figures move between two reads.
    registry = PerfRegistry(namespace=namespace, process_metrics=False)
    registry.register(Drawn(registry, drawn))
    snapshot = Snapshot(list(registry.prometheus.collect()))
    for openmetrics, library in ((False, generate_latest), (True, om_generate_latest)):
        fast = FastRenderer(openmetrics=openmetrics)
        expected = FastRenderer(openmetrics=openmetrics).render(snapshot)
        for _ in range(2):
            assert fast.render(registry.prometheus) == expected
        assert parsed(expected, openmetrics) == parsed(library(registry.prometheus), openmetrics)


def test_only_the_renderers_request_attaches_rows(registry: PerfRegistry) -> None:
    """Outside a render the package's families carry samples; inside, rows and no samples."""
    PerfMiddleware(_noop, registry=registry)
    stats = registry.find_component(HTTP_STATS)
    assert stats is not None
    stats.record("GET", "/a", "200", 0.1, None, 1, 2)
    plain = {m.name: m for m in registry.prometheus.collect()}
    assert plain["http_requests"].samples
    assert attached(plain["http_requests"]) is None
    with reading_rows(RowsRequest(attach=True)):
        carried = {m.name: m for m in registry.prometheus.collect()}
    assert carried["http_requests"].samples == []
    rows = attached(carried["http_requests"])
    assert rows is not None
    assert rows.rows.rows == [(("GET", "/a", "200"), 1)]
    assert rows.labelnames == ("method", "route", "status")


def test_a_malformed_row_falls_back_to_the_library(registry: PerfRegistry) -> None:
    """A histogram row with the wrong number of bucket counts raises RenderError (the metrics
    app then renders with prometheus_client, which reports the collector's error)."""
    bad = FamilyRows(HISTOGRAM, "histogram", [(("GET", "/", "200"), ([1, 2, 3], 0.5))], (0.1,))
    registry.register(Drawn(registry, [bad]))
    with pytest.raises(RenderError):
        FastRenderer(openmetrics=False).render(registry.prometheus)


async def _noop(scope: Any, receive: Any, send: Any) -> None:
    return None

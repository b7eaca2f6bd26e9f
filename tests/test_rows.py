"""Rows: collectors' series as plain values beside collect() (asgi_perf._rows)."""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any, ClassVar

import pytest
from prometheus_client.metrics_core import Metric

from asgi_perf import PerfRegistry
from asgi_perf._rows import FamilyRows, RowsRequest, current_request, reading_rows
from asgi_perf.registry import COLLECT_COMPONENT, CatalogueCollector
from asgi_perf.testing import sample


class Plain(CatalogueCollector):
    metrics: ClassVar[tuple[str, ...]] = ("cache_entries",)

    def collect(self) -> Iterable[Metric]:
        family: Any = self.registry.family("cache_entries")
        family.add_metric(["users"], 3)
        return [family]


class WithRows(CatalogueCollector):
    metrics: ClassVar[tuple[str, ...]] = ("cache_maxsize", "cache_coalesced_total")
    fail = False

    def rows(self, skip: Container[str] = frozenset()) -> list[FamilyRows]:
        if self.fail:
            raise RuntimeError("broken owner")
        out = [
            FamilyRows("cache_maxsize", "gauge", [(("users",), 10)]),
            FamilyRows("cache_coalesced_total", "counter", [(("users",), 2)]),
        ]
        return [f for f in out if f.name not in skip]


def test_a_collect_only_collector_has_no_rows(registry: PerfRegistry) -> None:
    """A collector that implements collect() says it has no rows, and is read as before even
    inside a rows request."""
    assert not Plain.has_rows()
    assert WithRows.has_rows()
    with pytest.raises(NotImplementedError):
        Plain(registry).rows()
    registry.register(Plain(registry))
    sink: list[FamilyRows] = []
    with reading_rows(RowsRequest(sink=sink)):
        names = [m.name for m in registry.prometheus.collect()]
    assert "cache_entries" in names
    assert sink == []


def test_collect_is_built_from_rows_and_skip_leaves_families_out(registry: PerfRegistry) -> None:
    """collect() of a rows collector gives the rows as families; a request's skip leaves those
    metrics out, in order, and the request ends with its block."""
    registry.register(WithRows(registry))
    assert sample(registry, "cache_maxsize", {"cache": "users"}) == 10
    assert sample(registry, "cache_coalesced_total", {"cache": "users"}) == 2
    with reading_rows(RowsRequest(skip=frozenset({"cache_maxsize"}))):
        names = [m.name for m in registry.prometheus.collect()]
    assert "cache_coalesced" in names
    assert "cache_maxsize" not in names
    assert current_request() is None


def test_rows_that_raise_are_contained(registry: PerfRegistry) -> None:
    """A rows collector that raises gives nothing to a sink or a scrape, and is counted."""
    collector = WithRows(registry)
    collector.fail = True
    registry.register(collector)
    sink: list[FamilyRows] = []
    with reading_rows(RowsRequest(sink=sink)):
        list(registry.prometheus.collect())
    assert sink == []
    assert sample(registry, "cache_maxsize", {"cache": "users"}) is None
    errors = sample(
        registry, "asgi_perf_instrumentation_errors_total", {"component": COLLECT_COMPONENT}
    )
    assert errors == 2

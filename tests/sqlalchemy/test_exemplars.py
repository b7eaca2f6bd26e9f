"""Query durations carry the current span's exemplar, successful and failed queries alike."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.openmetrics import exposition
from sqlalchemy import create_engine, text

from asgi_perf import PerfRegistry
from asgi_perf.sqlalchemy import instrument_engine

generate_latest: Callable[..., bytes] = exposition.generate_latest


def test_query_duration_buckets_carry_the_span_ids() -> None:
    """A query run inside a recording span leaves its trace id on its duration bucket, a failed
    one on the error series; queries outside a span leave none."""
    registry = PerfRegistry()
    engine = create_engine("sqlite://")
    instrument_engine(engine, registry=registry, name="main")
    tracer = TracerProvider().get_tracer("tests")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        with tracer.start_as_current_span("query") as span:
            conn.execute(text("SELECT 2"))
            with pytest.raises(Exception, match="no such table"):
                conn.execute(text("SELECT * FROM missing"))
    engine.dispose()
    trace_id = f"{span.get_span_context().trace_id:032x}"
    lines = [
        line
        for line in generate_latest(registry.prometheus).decode().splitlines()
        if line.startswith("db_query_duration_seconds_bucket") and "# {" in line
    ]
    assert len(lines) == 2
    assert all(f'trace_id="{trace_id}"' in line for line in lines)
    assert any('outcome="ok"' in line for line in lines)
    assert any('outcome="error"' in line for line in lines)


def test_without_a_source_queries_keep_no_exemplars() -> None:
    """exemplars=False: the plain histograms are built, nothing is kept inside a span."""
    registry = PerfRegistry(exemplars=False)
    engine = create_engine("sqlite://")
    instrument_engine(engine, registry=registry, name="main")
    tracer = TracerProvider().get_tracer("tests")
    with engine.connect() as conn, tracer.start_as_current_span("query"):
        conn.execute(text("SELECT 1"))
    engine.dispose()
    assert b"trace_id" not in generate_latest(registry.prometheus)

"""SQLAlchemy histograms in multi-worker mode: kept in the worker's shared-memory file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from sqlalchemy import create_engine, text

from asgi_perf import PerfRegistry
from asgi_perf import _shared as shared
from asgi_perf.export import _mp_store as store
from asgi_perf.export import _multiprocess as mp
from asgi_perf.sqlalchemy import instrument_engine
from asgi_perf.sqlalchemy._stats import SQL_STATS
from asgi_perf.testing import sample

from .._multiprocess import parse


def test_query_and_checkout_histograms_are_exact_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Statements and checkouts recorded by a worker are in its shared file at once (no
    publish), the worker's own view agrees, and the snapshot carries only the pool gauges."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    reg = PerfRegistry()
    engine = create_engine("sqlite://")
    instrument_engine(engine, registry=reg, name="main")
    with engine.connect() as conn:
        for _ in range(7):
            conn.execute(text("SELECT 1"))
    families: store.Families = {}
    assert store.merge_shared(families, tmp_path) == []
    values = {k: v for _, (_, _, vals) in families.items() for k, v in vals.items()}
    labels = (("engine", "main"), ("operation", "SELECT"), ("outcome", "ok"))
    assert values[("db_query_duration_seconds_count", labels)] == 7
    assert values[("db_pool_checkout_seconds_count", (("engine", "main"),))] == 1
    local = sample(reg, "db_query_duration_seconds", dict(labels), suffix="_count")
    assert local == 7
    assert shared.worker_files(tmp_path)
    stats = reg.find_component(SQL_STATS)
    assert stats is not None
    assert stats.engines["main"].checkout.count == 1
    assert stats.engines["main"].per_request_count.count == 0  # never observed: no slots
    m = mp.enable_multiprocess(reg, tmp_path, interval=60)
    try:
        merged = parse(generate_latest(m.view).decode())
        assert merged[("db_query_duration_seconds_count", labels)] == 7
        names = {family[0] for family in json.loads(m.path.read_bytes())["families"]}
        assert "db_query_duration_seconds" not in names
        assert "db_pool_size" in names
    finally:
        m.close()
        engine.dispose()

"""Socket.IO counters and histograms in multi-worker mode: kept in the worker's shared file."""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_perf import PerfRegistry
from asgi_perf.export import _mp_store as store
from asgi_perf.socketio._stats import socketio_stats
from asgi_perf.testing import sample


def test_counters_and_histograms_are_in_the_shared_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events, drops, handler durations and batch sizes recorded by a worker are readable by any
    process at once; the worker's own view agrees; gauges stay out of the shared file."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    reg = PerfRegistry()
    stats = socketio_stats(reg)
    for _ in range(5):
        stats.inc("socketio_events_received_total", ("/chat", "message"))
    stats.inc("socketio_received_bytes_total", ("/chat",), 120)
    stats.observe_handler(("/chat", "message"), 0.02)
    stats.batch_items.observe(3)
    families: store.Families = {}
    assert store.merge_shared(families, tmp_path) == []
    values = {k: v for _, (_, _, vals) in families.items() for k, v in vals.items()}
    chat = (("event", "message"), ("namespace", "/chat"))
    assert values[("socketio_events_received_total", chat)] == 5
    assert values[("socketio_received_bytes_total", (("namespace", "/chat"),))] == 120
    assert values[("socketio_batch_dropped_total", (("reason", "send_error"),))] == 0
    assert values[("socketio_handler_duration_seconds_count", chat)] == 1
    assert values[("socketio_batch_items_sum", ())] == 3
    labels = {"namespace": "/chat", "event": "message"}
    assert sample(reg, "socketio_events_received_total", labels) == 5
    assert "socketio_connections" not in families
    assert "socketio_connections" not in reg.shared_families
    assert "socketio_events_received" in reg.shared_families

"""Timers and custom counters in multi-worker mode: kept in the worker's shared file."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from asgi_perf import PerfRegistry
from asgi_perf.export import _mp_store as store
from asgi_perf.export import _multiprocess as mp
from asgi_perf.operations import Timings
from asgi_perf.testing import sample

from .._multiprocess import parse


def _merged(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    families: store.Families = {}
    assert store.merge_shared(families, directory) == []
    return {k: v for _, (_, _, vals) in families.items() for k, v in vals.items()}


def _work(reg: PerfRegistry, runs: int) -> None:
    """``runs`` timed calls of ``report`` (the last one raises) and ``runs`` counted events."""

    @reg.timed("report")
    def report(fail: bool) -> None:
        if fail:
            raise RuntimeError("report failed")

    for i in range(runs):
        if i == runs - 1:
            with pytest.raises(RuntimeError):
                report(True)
        else:
            report(False)
        reg.count("signup")
    reg.count("bytes", 2.5)


def test_two_workers_timers_are_exact_without_publishing_and_survive_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two registries on one directory (two workers) time and count into their own files: the
    merged totals are exact at once (no publish), each worker's stats() and own view agree, and
    a worker that is gone keeps its counts in the total."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    reg_a, reg_b = PerfRegistry(), PerfRegistry()
    _work(reg_a, 3)
    _work(reg_b, 5)
    report = (("name", "report"),)
    values = _merged(tmp_path)
    assert values[("app_timer_duration_seconds_count", report)] == 3 + 5
    assert values[("app_timer_errors_total", report)] == 2
    assert values[("app_events_total", (("name", "signup"),))] == 3 + 5
    assert values[("app_events_total", (("name", "bytes"),))] == 5.0
    stats = reg_a.stats("report")
    assert (stats["count"], stats["errors"]) == (3, 1)
    assert stats["min"] is not None
    assert stats["max"] is not None
    assert stats["min"] <= stats["max"]
    assert Timings.of(reg_b).counters() == {"signup": 5, "bytes": 2.5}
    assert sample(reg_b, "app_timer_errors_total", {"name": "report"}) == 1
    assert sample(reg_a, "app_events_total", {"name": "signup"}) == 3
    assert {"app_timer_duration_seconds", "app_timer_errors", "app_events"} <= (
        reg_a.shared_families
    )

    # Worker b goes away without a word: nothing it counted is lost.
    del reg_b
    gc.collect()
    m = mp.enable_multiprocess(reg_a, tmp_path, interval=60)
    try:
        merged = parse(generate_latest(m.view).decode())
        assert merged[("app_timer_duration_seconds_count", report)] == 8
        assert merged[("app_events_total", (("name", "signup"),))] == 8
        names = {family[0] for family in json.loads(m.path.read_bytes())["families"]}
        assert not names & {"app_timer_duration_seconds", "app_timer_errors", "app_events"}
    finally:
        m.close()

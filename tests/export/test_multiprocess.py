"""Multi-worker mode: configuration, snapshot merging, liveness, compaction (asgi_perf.export)."""

from __future__ import annotations

import gc
import json
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from asgi_perf import PerfRegistry, metrics_app
from asgi_perf.cache import LRUCache
from asgi_perf.export import _mp_store as store
from asgi_perf.export import _multiprocess as mp
from asgi_perf.export._multiprocess import MULTIPROCESS
from asgi_perf.testing import sample

from .._multiprocess import dead_pid, live_process, parse, total, write_worker


@pytest.fixture
def mpdir(tmp_path: Path) -> Path:
    d = tmp_path / "mp"
    d.mkdir()
    return d


@pytest.fixture
def merged(mpdir: Path) -> Iterator[mp.Multiprocess]:
    """This process as one worker, publishing into ``mpdir`` (closed after the test)."""
    reg = PerfRegistry()
    m = mp.enable_multiprocess(reg, mpdir, interval=60)
    yield m
    m.close()


def counting(n: float, entries: float = 0) -> PerfRegistry:
    """A worker registry with ``n`` events counted and a gauge of ``entries``."""
    reg = PerfRegistry()
    reg.count("jobs", n)
    reg.gauge("cache_entries").labels("users").set(entries)
    return reg


def view(m: mp.Multiprocess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return parse(generate_latest(m.view).decode())


# -- configuration ------------------------------------------------------------------------------


def test_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    """A PROMETHEUS_MULTIPROC_DIR that does not exist fails at construction, naming it."""
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match="does not exist") as info:
        mp.enable_multiprocess(PerfRegistry(), missing)
    assert str(info.value) == mp.ERR_DIR_MISSING.format(str(missing))


def test_file_instead_of_directory_is_rejected(tmp_path: Path) -> None:
    """A path to a regular file is not a usable directory."""
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is not a directory") as info:
        mp.check_directory(f)
    assert str(info.value) == mp.ERR_DIR_NOT_DIR.format(str(f))


def test_unwritable_directory_is_rejected() -> None:
    """A directory nobody can create files in (even root: /proc) is rejected up front."""
    with pytest.raises(ValueError, match="not writable") as info:
        mp.check_directory("/proc")
    assert str(info.value) == mp.ERR_DIR_NOT_WRITABLE.format("/proc")


@pytest.mark.parametrize("interval", [0, -1, float("inf"), float("nan"), True, "1"])
def test_bad_interval_is_rejected(mpdir: Path, interval: object) -> None:
    """The publish interval must be a positive, finite number of seconds."""
    with pytest.raises(ValueError, match="interval") as info:
        mp.enable_multiprocess(PerfRegistry(), mpdir, interval=interval)  # type: ignore[arg-type]
    assert str(info.value) == mp.ERR_INTERVAL.format(interval)


def test_bad_gauge_mode_is_rejected(mpdir: Path) -> None:
    """Gauge modes are limited to the live-worker modes asgi-perf implements."""
    with pytest.raises(ValueError, match="gauge mode") as info:
        mp.enable_multiprocess(PerfRegistry(), mpdir, gauge_modes={"g": "sum"})
    assert str(info.value) == mp.ERR_GAUGE_MODE.format("g", sorted(store.GAUGE_MODES), "sum")


def test_no_directory_anywhere_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the variable and without directory=, enabling (or marking dead) explains why."""
    monkeypatch.delenv(mp.MULTIPROC_ENV, raising=False)
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR") as info:
        mp.enable_multiprocess(PerfRegistry())
    assert str(info.value) == mp.ERR_NO_DIR
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        mp.mark_process_dead(1)


def test_registry_must_be_a_perf_registry(mpdir: Path) -> None:
    """Only a PerfRegistry can be published."""
    with pytest.raises(ValueError, match="PerfRegistry"):
        mp.enable_multiprocess(object(), mpdir)  # type: ignore[arg-type]


def test_metrics_app_enables_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, mpdir: Path
) -> None:
    """metrics_app() turns multi-worker mode on when the variable is set, with its interval."""
    monkeypatch.setenv(mp.MULTIPROC_ENV, str(mpdir))
    monkeypatch.setenv(mp.INTERVAL_ENV, "0.5")
    reg = PerfRegistry()
    metrics_app(reg)
    m = reg.find_component(MULTIPROCESS)
    assert isinstance(m, mp.Multiprocess)
    try:
        assert m.interval == 0.5
        assert m.directory == mpdir
    finally:
        m.close()


def test_metrics_app_rejects_an_unusable_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A set-but-missing directory makes metrics_app() (and so instrument()) raise at start-up."""
    monkeypatch.setenv(mp.MULTIPROC_ENV, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="does not exist"):
        metrics_app(PerfRegistry())


def test_bad_interval_variable_is_rejected(monkeypatch: pytest.MonkeyPatch, mpdir: Path) -> None:
    """ASGI_PERF_MULTIPROC_INTERVAL that is not a number fails loudly, naming the variable."""
    monkeypatch.setenv(mp.MULTIPROC_ENV, str(mpdir))
    monkeypatch.setenv(mp.INTERVAL_ENV, "soon")
    with pytest.raises(ValueError, match=mp.INTERVAL_ENV):
        mp.enable_from_environment(PerfRegistry())


def test_nothing_happens_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Single-process apps are untouched: no component, the registry itself is served."""
    monkeypatch.delenv(mp.MULTIPROC_ENV, raising=False)
    reg = PerfRegistry()
    assert mp.enable_from_environment(reg) is None
    metrics_app(reg)
    assert reg.find_component(MULTIPROCESS) is None


def test_enabling_twice_returns_the_same_publisher(merged: mp.Multiprocess) -> None:
    """A second enable on one registry reuses its publisher and takes the new interval."""
    again = mp.enable_multiprocess(merged.registry, merged.directory, interval=2)
    assert again is merged
    assert merged.interval == 2


# -- merging --------------------------------------------------------------------------------------


def test_counters_sum_over_all_workers_gauges_over_live_ones(
    merged: mp.Multiprocess, mpdir: Path
) -> None:
    """Counters add up over live and dead workers; a dead worker's gauge no longer counts."""
    merged.registry.count("jobs", 1)
    merged.registry.gauge("cache_entries").labels("users").set(1)
    with live_process() as live:
        write_worker(mpdir, live, counting(10, entries=5))
        write_worker(mpdir, dead_pid(), counting(100, entries=50))
        values = view(merged)
    assert values[("app_events_total", (("name", "jobs"),))] == 111
    assert values[("cache_entries", (("cache", "users"),))] == 6


def test_histograms_merge_bucket_by_bucket(merged: mp.Multiprocess, mpdir: Path) -> None:
    """Cumulative buckets, _count and _sum of a histogram add up across workers."""
    other = PerfRegistry()
    for reg, value in ((merged.registry, 0.003), (other, 0.3)):
        reg.histogram("cache_load_duration_seconds").labels("t").observe(value)
    with live_process() as live:
        write_worker(mpdir, live, other)
        values = view(merged)
    name = "cache_load_duration_seconds"
    assert values[(name + "_count", (("cache", "t"),))] == 2
    assert values[(name + "_sum", (("cache", "t"),))] == pytest.approx(0.303)
    assert values[(name + "_bucket", (("cache", "t"), ("le", "0.005")))] == 1
    assert values[(name + "_bucket", (("cache", "t"), ("le", "+Inf")))] == 2


def test_created_timestamps_take_the_earliest_worker(merged: mp.Multiprocess, mpdir: Path) -> None:
    """A counter's _created is the oldest worker's, never a sum of timestamps."""
    merged.registry.counter("asgi_perf_series_overflow_total").labels("m").inc()
    older = PerfRegistry()
    older.counter("asgi_perf_series_overflow_total").labels("m").inc()
    path = write_worker(mpdir, os.getppid(), older)
    raw = json.loads(path.read_bytes())
    for family in raw["families"]:
        for s in family[3]:
            if s[0] == "asgi_perf_series_overflow_created":
                s[2] = 1000.0
    path.write_text(json.dumps(raw))
    values = view(merged)
    assert values[("asgi_perf_series_overflow_created", (("metric", "m"),))] == 1000.0
    assert values[("asgi_perf_series_overflow_total", (("metric", "m"),))] == 2


class _HostGauges:
    def __init__(self, value: float) -> None:
        self.value = value

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("system_cpu_ratio", "host cpu")
        g.add_metric([], self.value)
        yield g
        w = GaugeMetricFamily("worker_state", "one per worker")
        w.add_metric([], self.value)
        yield w
        low = GaugeMetricFamily("low_water", "smallest wins")
        low.add_metric([], self.value)
        yield low


def test_gauge_modes_max_min_and_per_worker(mpdir: Path) -> None:
    """Host-wide gauges take the max, livemin the min, liveall keeps one series per pid."""
    reg = PerfRegistry()
    reg.register(_HostGauges(0.25))
    m = mp.enable_multiprocess(
        reg, mpdir, interval=60, gauge_modes={"worker_state": "liveall", "low_water": "livemin"}
    )
    try:
        other = PerfRegistry()
        other.register(_HostGauges(0.75))
        with live_process() as live:
            write_worker(mpdir, live, other)
            values = view(m)
            assert values[("system_cpu_ratio", ())] == 0.75
            assert values[("low_water", ())] == 0.25
            assert values[("worker_state", (("pid", str(os.getpid())),))] == 0.25
            assert values[("worker_state", (("pid", str(live)),))] == 0.75
    finally:
        m.close()


def test_namespace_applies_to_the_default_gauge_modes(mpdir: Path) -> None:
    """With a namespace, the host gauges are still merged by max, under their exposed name."""
    reg = PerfRegistry(namespace="shop")

    class Cpu:
        def collect(self) -> Iterator[Metric]:
            g = GaugeMetricFamily("shop_system_cpu_ratio", "host cpu")
            g.add_metric([], 0.5)
            yield g

    reg.register(Cpu())
    m = mp.enable_multiprocess(reg, mpdir, interval=60)
    try:
        m.publish()
        write_worker(mpdir, os.getppid(), reg)
        assert view(m)[("shop_system_cpu_ratio", ())] == 0.5
    finally:
        m.close()


def test_merged_output_passes_promtool(merged: mp.Multiprocess, mpdir: Path, promtool: str) -> None:
    """The merged exposition of several workers is valid for Prometheus' own checker."""
    import subprocess

    merged.registry.count("jobs", 2)
    merged.registry.histogram("cache_load_duration_seconds").labels("t").observe(0.1)
    with live_process() as live:
        write_worker(mpdir, live, counting(3, entries=2))
        text = generate_latest(merged.view)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()


# -- liveness and compaction -----------------------------------------------------------------------


def test_dead_workers_are_compacted_and_totals_stay(merged: mp.Multiprocess, mpdir: Path) -> None:
    """Dead workers' files fold into one; counters read the same before and after."""
    merged.registry.count("jobs", 1)
    for n in range(5):
        write_worker(mpdir, dead_pid(), counting(10 + n, entries=7))
    before = view_without_compaction(merged)
    assert total(before, "app_events_total") == 1 + sum(10 + n for n in range(5))
    assert total(before, "cache_entries") == 0  # dead workers' gauges are gone already
    after = view(merged)
    assert total(after, "app_events_total") == total(before, "app_events_total")
    left = sorted(p.name for p in store.snapshot_files(mpdir))
    assert left == [merged.path.name]
    assert (mpdir / store.COMPACTED).exists()
    write_worker(mpdir, dead_pid(), counting(100))
    assert total(view(merged), "app_events_total") == total(before, "app_events_total") + 100


def view_without_compaction(
    m: mp.Multiprocess,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry_text = "".join(_render(m.collect(compact=False)))
    return parse(registry_text)


def _render(metrics: Iterator[Metric]) -> Iterator[str]:
    from prometheus_client import CollectorRegistry

    class Fixed:
        def collect(self) -> Iterator[Metric]:
            return metrics

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Fixed())
    yield generate_latest(reg).decode()


def test_a_reused_pid_does_not_hide_the_older_worker(merged: mp.Multiprocess, mpdir: Path) -> None:
    """Two files with one pid: the older writer is dead (compacted), the newer one live."""
    with live_process() as pid:
        write_worker(mpdir, pid, counting(5, entries=1), token="1")
        write_worker(mpdir, pid, counting(7, entries=2), token="2")
        values = view(merged)
    assert total(values, "app_events_total") == 12
    assert total(values, "cache_entries") == 2


def test_a_crash_during_compaction_never_counts_twice(merged: mp.Multiprocess, mpdir: Path) -> None:
    """A file already folded but not yet removed (crash in between) is skipped, then removed."""
    path = write_worker(mpdir, dead_pid(), counting(10))
    copy = path.read_bytes()
    assert total(view(merged), "app_events_total") == 10
    path.write_bytes(copy)  # as if the unlink after the fold never happened
    compacted = json.loads((mpdir / store.COMPACTED).read_bytes())
    compacted["token"] = path.name
    (mpdir / store.COMPACTED).write_text(json.dumps(compacted))
    assert total(view(merged), "app_events_total") == 10
    assert not path.exists()


def test_mark_process_dead_compacts_at_once(mpdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gunicorn child_exit hook folds the exited worker's file; other files stay."""
    monkeypatch.setenv(mp.MULTIPROC_ENV, str(mpdir))
    with live_process() as gone, live_process() as stays:
        write_worker(mpdir, gone, counting(4))
        keep = write_worker(mpdir, stays, counting(6))
        mp.child_exit(None, SimpleNamespace(pid=gone))
        assert mp.mark_process_dead(gone) == 0  # nothing left to fold
        assert sorted(p.name for p in store.snapshot_files(mpdir)) == [keep.name]
        compacted = store.load(mpdir / store.COMPACTED)
        assert compacted is not None
        merged: store.Families = {}
        store.merge_into(merged, compacted, live=False, gauge_modes={})
        assert sum(v for (n, _), v in merged["app_events"][2].items() if n.endswith("_total")) == 4


def test_files_that_are_not_snapshots_are_ignored(merged: mp.Multiprocess, mpdir: Path) -> None:
    """Other files in the shared directory (prometheus_client's, stray ones) are left alone."""
    (mpdir / "counter_123.db").write_bytes(b"\0" * 8)
    (mpdir / "asgi_perf_notapid_x.json").write_text("{}")
    merged.registry.count("jobs", 3)
    assert total(view(merged), "app_events_total") == 3
    with live_process() as pid:
        (mpdir / store.snapshot_name(pid, "9")).write_text("{not json")
        assert total(view(merged), "app_events_total") == 3
    errors = sample(
        merged.registry, "asgi_perf_instrumentation_errors_total", {"component": "multiprocess"}
    )
    assert errors == 1
    assert (mpdir / "counter_123.db").exists()


# -- the publisher ----------------------------------------------------------------------------------


def test_publish_writes_only_on_change_and_close_publishes_last(mpdir: Path) -> None:
    """An idle worker does not rewrite its file; close() publishes the final numbers once.

    Without process figures, which move between any two publishes (CPU seconds, memory)."""
    reg = PerfRegistry(process_metrics=False)
    m = mp.enable_multiprocess(reg, mpdir, interval=60)
    assert m.publish()
    first = m.path.stat().st_mtime_ns
    os.utime(m.path, ns=(0, 0))
    assert m.publish()
    assert m.path.stat().st_mtime_ns == 0  # unchanged content: not rewritten
    LRUCache[str, int](10, name="jobs", registry=reg)["job"] = 9  # a scrape-time gauge
    m.close()
    m.close()
    assert first
    snap = store.load(m.path)
    assert snap is not None
    assert any(f[0] == "cache_entries" for f in snap.families)


def test_the_thread_publishes_every_interval(mpdir: Path) -> None:
    """Without any scrape, the worker's numbers reach its file within the interval."""
    from .._time import wait_until

    reg = PerfRegistry()
    m = mp.enable_multiprocess(reg, mpdir, interval=0.05)
    try:
        LRUCache[str, int](10, name="jobs", registry=reg)["job"] = 4  # a scrape-time gauge

        def published() -> bool:
            snap = store.load(m.path)
            return snap is not None and '"cache_entries"' in json.dumps(snap.families)

        wait_until(published, "the publisher thread writes the snapshot")
    finally:
        m.close()


class _Broken:
    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("collector failed")


def test_a_raising_collector_is_left_out_of_the_publish(mpdir: Path) -> None:
    """A collector that raises is left out of the published snapshot (counted under 'collect');
    everything else is still published."""
    reg = PerfRegistry()
    m = mp.enable_multiprocess(reg, mpdir, interval=60)
    broken = _Broken()
    try:
        reg.register(broken)
        LRUCache[str, int](10, name="jobs", registry=reg)["job"] = 2  # a scrape-time gauge
        assert m.publish() is True
        errors = sample(reg, "asgi_perf_instrumentation_errors_total", {"component": "collect"})
        assert errors == 1
        snap = store.load(m.path)
        assert snap is not None
        assert '"cache_entries"' in json.dumps(snap.families)
    finally:
        reg.unregister(broken)
        m.close()


def test_a_failing_publish_is_counted_not_raised(mpdir: Path) -> None:
    """A snapshot that cannot be written (a directory stands where the file goes) makes the
    publish fail open: counted under 'multiprocess', never raised."""
    reg = PerfRegistry()
    m = mp.enable_multiprocess(reg, mpdir, interval=60)
    try:
        m.path.unlink(missing_ok=True)
        m.path.mkdir()
        m._last = b""
        assert m.publish() is False
        errors = sample(
            reg, "asgi_perf_instrumentation_errors_total", {"component": "multiprocess"}
        )
        assert errors == 1
    finally:
        m.path.rmdir()
        m.close()


def test_a_failing_scrape_fails_loudly(tmp_path: Path) -> None:
    """If the directory vanished, the scrape raises (Prometheus sees it) and the error is counted."""
    d = tmp_path / "gone"
    d.mkdir()
    reg = PerfRegistry()
    m = mp.enable_multiprocess(reg, d, interval=60)
    try:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()
        with pytest.raises(FileNotFoundError):
            generate_latest(m.view)
        errors = sample(
            reg, "asgi_perf_instrumentation_errors_total", {"component": "multiprocess"}
        )
        assert errors is not None
        assert errors >= 1
    finally:
        m.close()


def test_a_forked_child_publishes_under_its_own_pid(merged: mp.Multiprocess) -> None:
    """After fork the publisher takes the child's pid and a new token and runs a new thread."""
    old_path = merged.path
    mp._after_fork(weakref.ref(merged))
    assert merged.path != old_path
    assert merged.token > old_path.name.split("_")[-1].removesuffix(".json")
    assert merged.publish()
    assert merged.path.exists()


def test_a_dropped_publisher_serves_nothing(mpdir: Path) -> None:
    """The merged view holds its publisher weakly; once gone it yields no families."""
    reg = PerfRegistry()
    m = mp.enable_multiprocess(reg, mpdir, interval=60)
    collector = mp._MergedCollector(m)
    m.close()
    del m
    reg._components.clear()
    gc.collect()
    assert list(collector.collect()) == []
    mp._after_fork(weakref.ref(mp.Multiprocess.__new__(mp.Multiprocess)))  # a dead ref: no-op


# -- corrupt and unreadable snapshots -------------------------------------------------------------

_HALF_VALID = json.dumps(
    {
        "pid": 1,
        "token": "1",
        "families": [
            [
                "app_events",
                "counter",
                "Custom counters.",
                [["app_events_total", [["name", "jobs"]], 100.0], ["app_events_total", [], "x"]],
            ]
        ],
    }
).encode()

_FAULTS = {
    "garbage bytes": lambda path: path.write_bytes(b"\x00\xff\xfe garbage \x80" * 10),
    "truncated JSON": lambda path: path.write_bytes(_HALF_VALID[: len(_HALF_VALID) // 2]),
    "half-valid JSON": lambda path: path.write_bytes(_HALF_VALID),
    "wrong shape": lambda path: path.write_text('{"pid": 1, "token": "1", "families": {"a": 1}}'),
    "a directory in its place": lambda path: path.mkdir(),
}


def _errors(registry: PerfRegistry) -> float:
    labels = {"component": "multiprocess"}
    return sample(registry, "asgi_perf_instrumentation_errors_total", labels) or 0.0


@pytest.mark.anyio
@pytest.mark.parametrize("fault", sorted(_FAULTS))
@pytest.mark.parametrize("writer", ["live", "dead"])
async def test_a_corrupt_or_unreadable_snapshot_is_skipped_counted_and_logged_once(
    merged: mp.Multiprocess,
    mpdir: Path,
    fault: str,
    writer: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker snapshot that is corrupt (garbage, truncated, half valid, wrong shape) or cannot
    be read (a directory in its place), of a live or a dead worker, is left out of every scrape:
    /metrics keeps answering 200 with everyone else's totals (nothing of the bad file in them),
    each scrape counts it under 'multiprocess', and it is logged once, not once per scrape."""
    from asgi_perf.testing import scrape

    merged.registry.count("jobs", 3)
    write_worker(mpdir, dead_pid(), counting(5))
    app = metrics_app(merged.registry, render_in_thread=False)
    with live_process() as live_pid:
        pid = live_pid if writer == "live" else dead_pid()
        bad = mpdir / store.snapshot_name(pid, "7".zfill(20))
        _FAULTS[fault](bad)
        before = _errors(merged.registry)
        with caplog.at_level("WARNING", logger="asgi_perf"):
            for _ in range(3):
                response = await scrape(app)
                assert response.status == 200
                assert total(parse(response.text), "app_events_total") == 8
        assert bad.exists()
    assert _errors(merged.registry) - before == 3
    logged = [r for r in caplog.records if bad.name in r.getMessage()]
    assert len(logged) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["garbage bytes", "truncated JSON", "a directory in its place"])
async def test_a_corrupt_compacted_file_is_skipped_and_dead_workers_still_count(
    merged: mp.Multiprocess, mpdir: Path, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt or unreadable compacted file is left out (counted, logged once); compaction
    waits for it to be repaired, so the dead workers' own files stay and still count."""
    from asgi_perf.testing import scrape

    merged.registry.count("jobs", 3)
    dead = write_worker(mpdir, dead_pid(), counting(5))
    _FAULTS[fault](mpdir / store.COMPACTED)
    app = metrics_app(merged.registry, render_in_thread=False)
    with caplog.at_level("WARNING", logger="asgi_perf"):
        for _ in range(3):
            response = await scrape(app)
            assert response.status == 200
            assert total(parse(response.text), "app_events_total") == 8
    assert dead.exists()
    assert _errors(merged.registry) >= 3
    logged = [r for r in caplog.records if store.COMPACTED in r.getMessage()]
    assert len(logged) == 1


# -- decoded snapshots kept between scrapes ------------------------------------------------------


@pytest.fixture
def quiet(mpdir: Path) -> Iterator[mp.Multiprocess]:
    """``merged`` without process figures: this worker's own file changes only when its counts
    do, so which files a scrape decodes is known."""
    m = mp.enable_multiprocess(PerfRegistry(process_metrics=False), mpdir, interval=60)
    yield m
    m.close()


def fixed(n: float, entries: float = 0) -> PerfRegistry:
    """:func:`counting` without process figures: the same arguments give the same file."""
    reg = PerfRegistry(process_metrics=False)
    reg.count("jobs", n)
    reg.gauge("cache_entries").labels("users").set(entries)
    return reg


def _counting_decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every snapshot decoded from now on (the scrape's own, not compaction's)."""
    decoded: list[bytes] = []
    real = store.decode

    def decode(data: bytes) -> store.Snapshot:
        decoded.append(data)
        return real(data)

    monkeypatch.setattr(store, "decode", decode)
    return decoded


def test_an_unchanged_snapshot_is_decoded_once(
    quiet: mp.Multiprocess, mpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scrape decodes only the files that changed since the previous one: with nothing
    changed the second scrape decodes nothing (the compacted file, this worker's and the other
    live worker's are the same bytes) and serves the same totals; a rewritten file is decoded."""
    quiet.registry.count("jobs", 1)
    with live_process() as live:
        other = write_worker(mpdir, live, fixed(10, entries=5))
        write_worker(mpdir, dead_pid(), fixed(100))
        first = view(quiet)  # compacts the dead worker's file, then merges
        assert (mpdir / store.COMPACTED).exists()
        decoded = _counting_decodes(monkeypatch)
        second = view(quiet)
        assert decoded == []
        write_worker(mpdir, live, fixed(20, entries=5))
        third = view(quiet)
        assert decoded == [other.read_bytes()]
    assert second == first
    assert total(first, "app_events_total") == 111
    assert total(third, "app_events_total") == 121


def test_a_snapshot_rewritten_to_the_same_size_is_read_anew(
    quiet: mp.Multiprocess, mpdir: Path
) -> None:
    """A file replaced by one of the same size (and possibly the freed inode, within one mtime
    tick) is decoded again: what is kept is keyed on the bytes, never on file metadata."""
    with live_process() as live:
        path = write_worker(mpdir, live, fixed(5, entries=1))
        size = path.stat().st_size
        assert total(view(quiet), "app_events_total") == 5
        write_worker(mpdir, live, fixed(6, entries=2))
        assert path.stat().st_size == size
        values = view(quiet)
    assert total(values, "app_events_total") == 6
    assert values[("cache_entries", (("cache", "users"),))] == 2


def test_a_kept_snapshot_that_turns_corrupt_is_skipped_every_scrape(
    quiet: mp.Multiprocess, mpdir: Path
) -> None:
    """A file read fine once and then corrupted is left out (and counted) at every scrape, not
    served from what the earlier scrape decoded."""
    quiet.registry.count("jobs", 3)
    with live_process() as live:
        path = write_worker(mpdir, live, fixed(5))
        assert total(view(quiet), "app_events_total") == 8
        before = _errors(quiet.registry)
        path.write_bytes(path.read_bytes()[:-10])
        for _ in range(2):
            assert total(view(quiet), "app_events_total") == 3
    assert _errors(quiet.registry) - before == 2


def test_only_live_workers_files_and_the_compacted_one_are_kept(
    quiet: mp.Multiprocess, mpdir: Path
) -> None:
    """What a scrape keeps is bounded by the live workers' files and the compacted one: a dead
    worker's file waiting for compaction is read, not kept, and once folded it is gone."""
    dead = write_worker(mpdir, dead_pid(), fixed(7))
    with live_process() as live:
        other = write_worker(mpdir, live, fixed(1))
        assert total(view_without_compaction(quiet), "app_events_total") == 8
        kept = quiet._snapshots._kept
        assert set(kept) == {quiet.path, other}
        assert total(view(quiet), "app_events_total") == 8
        assert not dead.exists()
        assert set(quiet._snapshots._kept) == {quiet.path, other, mpdir / store.COMPACTED}
    # The live worker has gone: its file is dead now and no longer kept.
    view_without_compaction(quiet)
    assert set(quiet._snapshots._kept) == {quiet.path, mpdir / store.COMPACTED}


def test_concurrent_scrapes_keep_their_totals_while_workers_come_and_go(
    quiet: mp.Multiprocess, mpdir: Path
) -> None:
    """Scrapes run at once (each rendered in a thread) while workers publish, die and are
    compacted: none fails, and the total never goes backwards."""
    import threading

    quiet.registry.count("jobs", 1)
    stop = threading.Event()
    failures: list[BaseException] = []
    seen: list[list[float]] = [[], []]

    def scrape(into: list[float]) -> None:
        while not stop.is_set():
            try:
                into.append(total(view(quiet), "app_events_total"))
            except BaseException as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=scrape, args=(into,)) for into in seen]
    for t in threads:
        t.start()
    try:
        for _ in range(40):
            write_worker(mpdir, dead_pid(), fixed(1))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    final = total(view(quiet), "app_events_total")
    assert final == 41
    for totals in seen:
        assert totals == sorted(totals)
        assert all(1 <= value <= final for value in totals)

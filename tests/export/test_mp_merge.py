"""The merged view's reader of shared memory equals the sample-by-sample merge it replaced."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_perf import PerfMiddleware, PerfRegistry
from asgi_perf import _shared as shared
from asgi_perf.export import _mp_shared as mp_shared
from asgi_perf.export import _mp_store as store
from asgi_perf.export import enable_multiprocess
from asgi_perf.http._stats import HTTP_STATS, HttpStats


async def _app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    pass


def _stats(registry: PerfRegistry) -> HttpStats:
    PerfMiddleware(_app, registry=registry)
    found = registry.find_component(HTTP_STATS)
    assert found is not None
    return found


def _reference(families: store.Families, directory: Path) -> list[Path]:
    """The merge as it was: each worker's file read in full, then added sample by sample."""
    failed = []
    for keys in shared.worker_files(directory):
        try:
            part, _ = mp_shared.read_shared(keys)
        except mp_shared.SHARED_ERRORS:
            failed.append(keys)
            continue
        mp_shared.fold(families, part)
    return failed


def _traffic(registry: PerfRegistry, routes: int, seed: int) -> None:
    stats = _stats(registry)
    for i in range(routes):
        for j, status in enumerate(("200", "404", "500")):
            for k in range((i + j + seed) % 4 + 1):
                duration = 0.0013 * (k + 1) * (i + seed + 1) ** 1.3
                stats.record("GET", f"/r{i}", status, duration, duration / 3, 7 * k, 11 * k)
    stats.record_exception("GET", "/r0", "ValueError")
    registry.count("bytes", 0.1 * (seed + 1))
    with registry.timer("job"):
        pass


def _check(directory: Path, reader: store.SharedReader, seed: store.Families) -> None:
    expected = copy.deepcopy(seed)
    failed = _reference(expected, directory)
    got = copy.deepcopy(seed)
    assert [path for path, _ in reader.merge(got, directory)] == failed
    assert got == expected
    # Same families, same keys, in the same order (the exposition order).
    assert list(got) == list(expected)
    assert [list(v[2]) for v in got.values()] == [list(v[2]) for v in expected.values()]


def test_four_workers_equal_the_sample_by_sample_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four workers with overlapping and distinct series, float counters and timers; then more
    traffic and new series appended to the indexes between two scrapes of one reader."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    workers = [PerfRegistry() for _ in range(4)]
    for n, registry in enumerate(workers):
        _traffic(registry, 6 + 2 * n, n)
    reader = store.SharedReader()
    _check(tmp_path, reader, {})
    for n, registry in enumerate(workers):
        _traffic(registry, 12, n + 5)
    _check(tmp_path, reader, {})
    _check(tmp_path, store.SharedReader(), {})


def test_totals_already_merged_from_snapshots_are_added_to_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Families already holding the same series (a compacted dead worker) are added to exactly
    as before, value for value."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    dead = PerfRegistry()
    _traffic(dead, 5, 3)
    folded: store.Families = {}
    assert store.merge_shared(folded, tmp_path) == []
    for keys in shared.worker_files(tmp_path):
        keys.unlink()
        shared.slots_path(keys).unlink()
    workers = [PerfRegistry() for _ in range(3)]
    for n, registry in enumerate(workers):
        _traffic(registry, 5, n)
    _check(tmp_path, store.SharedReader(), folded)


def test_a_failing_file_and_a_vanished_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker file with a series past its slots is skipped whole, like before; a worker whose
    files were compacted away meanwhile is forgotten by the reader."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    a, b = PerfRegistry(), PerfRegistry()
    _traffic(a, 3, 0)
    _traffic(b, 3, 1)
    reader = store.SharedReader()
    _check(tmp_path, reader, {})
    keys = shared.worker_files(tmp_path)
    record = json.loads(keys[0].read_bytes().splitlines()[0])
    record[0] = 10**9
    with open(keys[0], "ab") as f:
        f.write(json.dumps(record).encode() + b"\n")
    _check(tmp_path, reader, {})
    keys[0].unlink()
    shared.slots_path(keys[0]).unlink()
    _check(tmp_path, reader, {})
    assert list(reader._files) == keys[1:]


def test_a_replaced_index_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index file replaced by another one (new inode, shorter) is parsed from its start."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = PerfRegistry()
    _traffic(registry, 4, 0)
    reader = store.SharedReader()
    _check(tmp_path, reader, {})
    (keys,) = shared.worker_files(tmp_path)
    first = keys.read_bytes().splitlines(keepends=True)[0]
    keys.unlink()
    keys.write_bytes(first)
    _check(tmp_path, reader, {})


_series = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3),  # worker
        st.sampled_from(["GET", "POST"]),
        st.sampled_from(["/a", "/b", "/c/{id}"]),
        st.sampled_from(["200", "500"]),
        st.floats(min_value=0.0, max_value=50.0, allow_nan=False),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=_series, second=_series)
def test_random_traffic_merges_alike(
    tmp_path_factory: pytest.TempPathFactory,
    first: list[tuple[int, str, str, str, float]],
    second: list[tuple[int, str, str, str, float]],
) -> None:
    """Any traffic over four workers, read twice by one reader: equal to the old merge."""
    directory = tmp_path_factory.mktemp("mp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
        stats = [_stats(PerfRegistry()) for _ in range(4)]
    reader = store.SharedReader()
    for batch in (first, second):
        for worker, method, route, status, duration in batch:
            stats[worker].record(method, route, status, duration, duration / 2, 3, 5)
        _check(directory, reader, {})


def test_the_merged_view_of_live_workers_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Multiprocess.collect() through the cached reader gives the totals of every worker."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    workers = [PerfRegistry() for _ in range(3)]
    for n, registry in enumerate(workers):
        _traffic(registry, 4, n)
    mp = enable_multiprocess(workers[0], tmp_path, interval=3600)
    try:
        for _ in range(2):
            families = {m.name: m for m in mp.collect()}
            requests = families["http_requests"].samples
            expected: store.Families = {}
            _reference(expected, tmp_path)
            want = expected["http_requests"][2]
            assert {(s.name, tuple(sorted(s.labels.items()))): s.value for s in requests} == want
    finally:
        mp.close()


def test_families_of_another_type_are_left_alone_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A family already merged with another type (a snapshot of another version) keeps it, and
    the series of the other type are left out, as before, for histograms and their counters."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for n in range(2):
        _traffic(PerfRegistry(), 3, n)
    seed: store.Families = {
        "http_request_duration_seconds": ("gauge", "Other.", {("x", ()): 1.0}),
        "http_requests": ("gauge", "Other.", {}),
    }
    _check(tmp_path, store.SharedReader(), seed)


def test_missing_files_read_as_nothing(tmp_path: Path) -> None:
    """An index gone before it is opened, or one without its slot file, adds nothing."""
    reader = store.SharedReader()
    assert reader._read(tmp_path / "asgi_perf_1_1.keys") == (None, [], [])
    assert list(shared.read_worker(tmp_path / "asgi_perf_1_1.keys")) == []
    keys = tmp_path / "asgi_perf_1_00000000000000000001.keys"
    keys.write_bytes(b'[0, "jobs", "counter", "Jobs.", [], [], [], []]\n')
    families: store.Families = {}
    assert reader.merge(families, tmp_path) == []
    assert families == {}


def test_files_the_compacted_file_holds_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Index files named in ``skip`` (already folded into the compacted file) add nothing."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for n in range(2):
        _traffic(PerfRegistry(), 2, n)
    first, second = shared.worker_files(tmp_path)
    families: store.Families = {}
    assert store.merge_shared(families, tmp_path, frozenset({first.name})) == []
    expected: store.Families = {}
    mp_shared.fold(expected, mp_shared.read_shared(second)[0])
    assert families == expected

"""Shared-memory counters for multi-worker mode (asgi_perf._shared and the stores built on it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import pytest
from prometheus_client import Counter as PromCounter
from prometheus_client import generate_latest

from asgi_perf import PerfMiddleware, PerfRegistry
from asgi_perf import _shared as shared
from asgi_perf.export import _mp_store as store
from asgi_perf.export import _multiprocess as mp
from asgi_perf.http._stats import HTTP_STATS, HttpStats, SharedHttpStats
from asgi_perf.testing import sample

from ._multiprocess import dead_pid, parse

BOUNDS = (0.1, 0.5, 1.0)


@pytest.fixture
def mpdir(tmp_path: Path) -> Path:
    d = tmp_path / "mp"
    d.mkdir()
    return d


@pytest.fixture
def shared_registry(mpdir: Path, monkeypatch: pytest.MonkeyPatch) -> PerfRegistry:
    """A registry built while PROMETHEUS_MULTIPROC_DIR is set, as in a worker."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(mpdir))
    return PerfRegistry()


async def _app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    pass


def stats_of(registry: PerfRegistry) -> HttpStats:
    PerfMiddleware(_app, registry=registry)
    found = registry.find_component(HTTP_STATS)
    assert found is not None
    return found


def read_all(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    families: store.Families = {}
    assert store.merge_shared(families, directory) == []
    return {k: v for _, (_, _, values) in families.items() for k, v in values.items()}


def requests(values: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(v for (name, _), v in values.items() if name == "http_requests_total")


# -- the choice is made once, at construction ------------------------------------------------


def test_without_the_variable_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Single-process mode: no store, the plain HTTP class, prometheus_client's own counters."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    reg = PerfRegistry()
    assert reg.shared is None
    # The plain class, or its exemplar-keeping subclass (opentelemetry-api is installed here).
    assert not isinstance(stats_of(reg), SharedHttpStats)
    assert isinstance(reg.counter("db_rows_total").metric, PromCounter)


def test_with_the_variable_counters_and_http_go_to_shared_memory(
    shared_registry: PerfRegistry, mpdir: Path
) -> None:
    """A worker's registry keeps HTTP series and catalogue counters in its shared file."""
    stats = stats_of(shared_registry)
    assert isinstance(stats, SharedHttpStats)
    stats.record("GET", "/a", "200", 0.2, 0.05, 10, 30)
    stats.record("GET", "/a", "200", 2.0, None, 5, 7)
    stats.record_exception("GET", "/a", "KeyError")
    shared_registry.counter("db_rows_total").labels("main", "select").inc(3)
    # The worker's own view (summary, testing helpers) reads the same slots.
    assert (
        sample(
            shared_registry,
            "http_requests_total",
            {"method": "GET", "route": "/a", "status": "200"},
        )
        == 2
    )
    assert sample(shared_registry, "db_rows_total", {"engine": "main", "operation": "select"}) == 3
    # Any other process reads them from the files, exactly.
    values = read_all(mpdir)
    labels = (("method", "GET"), ("route", "/a"), ("status", "200"))
    assert values[("http_requests_total", labels)] == 2
    assert (
        values[("http_request_duration_seconds_bucket", tuple(sorted((*labels, ("le", "0.25")))))]
        == 1
    )
    assert (
        values[("http_request_duration_seconds_bucket", tuple(sorted((*labels, ("le", "+Inf")))))]
        == 2
    )
    assert values[("http_request_duration_seconds_sum", labels)] == pytest.approx(2.2)
    route = (("method", "GET"), ("route", "/a"))
    assert values[("http_request_ttfb_seconds_count", route)] == 1
    assert values[("http_request_size_bytes_sum", route)] == 15
    assert values[("http_response_size_bytes_count", route)] == 2
    assert (
        values[("http_exceptions_total", tuple(sorted((*route, ("exception", "KeyError")))))] == 1
    )
    rows = (("engine", "main"), ("operation", "select"))
    assert values[("db_rows_total", rows)] == 3


def test_explicit_enabling_attaches_a_store_for_later_components(
    mpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """enable_multiprocess() without the variable: components built afterwards are shared."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    reg = PerfRegistry()
    m = mp.enable_multiprocess(reg, mpdir, interval=60)
    try:
        assert reg.shared is not None
        assert isinstance(stats_of(reg), SharedHttpStats)
    finally:
        m.close()


# -- exact under concurrency, fork and SIGKILL -------------------------------------------------


def test_threads_recording_at_once_lose_nothing(shared_registry: PerfRegistry, mpdir: Path) -> None:
    """Eight threads recording HTTP requests and counting at once: every one is in the file."""
    stats = stats_of(shared_registry)
    rows = shared_registry.counter("db_rows_total")
    per_thread = 5000
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            stats.record("GET", f"/r{i % 3}", "200", 0.01 * (i % 7), 0.001, 1, 2)
            rows.labels("main", "select").inc()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    values = read_all(mpdir)
    assert requests(values) == 8 * per_thread
    assert (
        values[("db_rows_total", (("engine", "main"), ("operation", "select")))] == 8 * per_thread
    )
    sizes = sum(v for (n, _), v in values.items() if n == "http_response_size_bytes_sum")
    assert sizes == 2 * 8 * per_thread


def test_a_forked_child_writes_files_of_its_own(shared_registry: PerfRegistry, mpdir: Path) -> None:
    """After fork the child's increments land in new files at the same offsets; the parent's
    counts stay in the parent's files, counted once."""
    stats = stats_of(shared_registry)
    stats.record("GET", "/a", "200", 0.2, None, 0, 0)
    assert shared_registry.shared is not None
    parent_keys = shared_registry.shared.keys_path
    shared._after_fork(weakref.ref(shared_registry.shared))  # what os.fork() runs in the child
    assert shared_registry.shared.keys_path != parent_keys
    stats.record("GET", "/a", "200", 0.2, None, 0, 0)
    stats.record("GET", "/a", "200", 0.2, None, 0, 0)
    assert requests(read_all(mpdir)) == 3
    assert len(shared.worker_files(mpdir)) == 2
    # The child's own view starts from zero.
    assert (
        sample(
            shared_registry,
            "http_requests_total",
            {"method": "GET", "route": "/a", "status": "200"},
        )
        == 2
    )


WORKER = """
import os, sys
from asgi_perf import PerfRegistry, PerfMiddleware
from asgi_perf.http._stats import HTTP_STATS

async def app(scope, receive, send):
    pass

reg = PerfRegistry()
PerfMiddleware(app, registry=reg)
stats = reg.find_component(HTTP_STATS)
for i in range(int(sys.argv[1])):
    stats.record("GET", "/killed", "200", 0.3, 0.1, 4, 8)
reg.counter("db_rows_total").labels("main", "insert").inc(7)
print("counted", flush=True)
sys.stdin.read()
"""


def test_a_sigkilled_worker_keeps_everything_it_counted(mpdir: Path) -> None:
    """A real process counts, is SIGKILLed without any chance to flush, and its counts stay."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mpdir)}
    with subprocess.Popen(
        [sys.executable, "-c", WORKER, "1234"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"counted\n"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    values = read_all(mpdir)
    assert requests(values) == 1234
    route = (("method", "GET"), ("route", "/killed"))
    assert values[("http_request_ttfb_seconds_sum", route)] == pytest.approx(123.4)
    assert values[("http_response_size_bytes_sum", route)] == 8 * 1234
    assert values[("db_rows_total", (("engine", "main"), ("operation", "insert")))] == 7


def test_the_merged_view_sums_and_compacts_dead_workers_and_publishes_no_copy(
    shared_registry: PerfRegistry, mpdir: Path
) -> None:
    """The merged scrape reads counters from the files only: the snapshot carries none of them
    (no double count); a dead worker's files add up, then are compacted without changing totals."""
    stats = stats_of(shared_registry)
    for _ in range(5):
        stats.record("GET", "/a", "200", 0.2, None, 0, 0)
    m = mp.enable_multiprocess(shared_registry, mpdir, interval=60)
    try:
        subprocess.run(
            [sys.executable, "-c", WORKER.replace("sys.stdin.read()", ""), "3"],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mpdir)},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        assert len(shared.worker_files(mpdir)) == 2
        assert requests(parse(generate_latest(m.view).decode())) == 8
        # The dead worker's files were folded into the compacted file and removed; the total
        # stays, scrape after scrape.
        assert shared_registry.shared is not None
        own = shared_registry.shared.keys_path
        assert shared.worker_files(mpdir) == [own]
        assert len(list(mpdir.glob("*.slots"))) == 1
        for _ in range(2):
            assert requests(parse(generate_latest(m.view).decode())) == 8
        assert m.path.exists()
        published = json.loads(m.path.read_bytes())
        names = {family[0] for family in published["families"]}
        assert "http_requests" not in names
        assert "http_request_duration_seconds" not in names
        assert "http_requests_in_progress" in names  # gauges keep the snapshot path
    finally:
        m.close()


# -- the files ---------------------------------------------------------------------------------


def test_a_half_written_index_line_is_ignored(mpdir: Path) -> None:
    """A reader racing an allocation sees only complete index lines."""
    s = shared.SharedStore(mpdir)
    slot = s.allocate("jobs", shared.COUNTER, "Jobs.", [("kind", "a")])
    s.values[slot] += 2
    with open(s.keys_path, "ab") as f:
        f.write(b'[1, "jobs", "counter"')
    assert [(x.labels, x.values) for x in shared.read_worker(s.keys_path)] == [
        ((("kind", "a"),), [2.0])
    ]


@pytest.mark.parametrize("writer", ["live", "dead"])
def test_a_corrupt_index_is_skipped_and_counted(
    shared_registry: PerfRegistry, mpdir: Path, writer: str
) -> None:
    """One unreadable worker file, of a live or a dead worker, never fails the scrape (nor its
    compaction): it is skipped and counted, scrape after scrape."""
    stats = stats_of(shared_registry)
    stats.record("GET", "/a", "200", 0.2, None, 0, 0)
    pid = 1 if writer == "live" else dead_pid()
    (mpdir / f"asgi_perf_{pid}_00000000000000000001.keys").write_bytes(b"not json\n")
    (mpdir / f"asgi_perf_{pid}_00000000000000000001.slots").write_bytes(b"\0" * 64)
    (mpdir / f"asgi_perf_{pid}_00000000000000000002.keys").write_bytes(
        b'[0, "jobs", "counter", "Jobs.", [], [], [], []]\n[99, "jobs", "counter", "", [], [], [], []]\n'
    )
    (mpdir / f"asgi_perf_{pid}_00000000000000000002.slots").write_bytes(b"\0" * 64)
    m = mp.enable_multiprocess(shared_registry, mpdir, interval=60)
    try:
        for scrape in (1, 2):
            assert requests(parse(generate_latest(m.view).decode())) == 1
            errors = sample(
                shared_registry,
                "asgi_perf_instrumentation_errors_total",
                {"component": "multiprocess"},
            )
            assert errors == 2 * scrape
    finally:
        m.close()


def test_a_full_file_raises_and_the_request_path_stays_open(mpdir: Path) -> None:
    """No slot left: allocation raises StoreFull (the middleware counts it, never raises)."""
    s = shared.SharedStore(mpdir, capacity=4)
    s.allocate("jobs", shared.COUNTER, "Jobs.", [])
    with pytest.raises(shared.StoreFull):
        s.allocate("latency", shared.HISTOGRAM, "Latency.", [], BOUNDS)


def test_a_shared_counter_refuses_negative_amounts(shared_registry: PerfRegistry) -> None:
    """Counters only go up, as prometheus_client's do."""
    with pytest.raises(ValueError, match="non-negative"):
        shared_registry.counter("db_rows_total").labels("main", "select").inc(-1)


def test_shared_histograms_observe_into_buckets(shared_registry: PerfRegistry, mpdir: Path) -> None:
    """A catalogue histogram in shared memory: buckets by Prometheus' le rule, and a sum."""
    hist = shared_registry.histogram("http_request_duration_seconds", BOUNDS)
    hist.labels("GET", "/h", "200").observe(0.1)
    hist.labels("GET", "/h", "200").observe(0.7)
    values = read_all(mpdir)
    labels = (("method", "GET"), ("route", "/h"), ("status", "200"))
    bucket = "http_request_duration_seconds_bucket"
    assert values[(bucket, tuple(sorted((*labels, ("le", "0.1")))))] == 1
    assert values[(bucket, tuple(sorted((*labels, ("le", "1.0")))))] == 2
    assert values[("http_request_duration_seconds_sum", labels)] == pytest.approx(0.8)


def test_a_registry_that_never_counts_leaves_no_files(
    shared_registry: PerfRegistry, mpdir: Path
) -> None:
    """Files are created on the first allocation, not with the registry."""
    stats_of(shared_registry)
    assert shared.worker_files(mpdir) == []


def test_mark_process_dead_folds_a_workers_shared_files(mpdir: Path) -> None:
    """gunicorn's child_exit path: the dead worker's index and slot files are folded at once."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mpdir)}
    script = WORKER.replace("sys.stdin.read()", "print(os.getpid())")
    out = subprocess.run(
        [sys.executable, "-c", script, "4"], env=env, check=True, capture_output=True
    )
    pid = int(out.stdout.split()[-1])
    assert mp.mark_process_dead(pid, mpdir) == 1
    assert shared.worker_files(mpdir) == []
    assert not list(mpdir.glob("*.slots"))
    compacted = store.load(mpdir / store.COMPACTED)
    assert compacted is not None
    families: store.Families = {}
    store.merge_into(families, compacted, live=False, gauge_modes={})
    flat = {k: v for _, (_, _, values) in families.items() for k, v in values.items()}
    assert requests(flat) == 4


def test_series_caps_fold_into_overflow_in_shared_memory(
    mpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTP series caps hold in multi-worker mode: new routes, statuses and exception types
    past the cap are folded into ``__overflow__`` and counted, nothing is lost."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(mpdir))
    reg = PerfRegistry(max_series_per_metric=1)
    stats = stats_of(reg)
    stats.record("GET", "/a", "200", 0.2, None, 0, 0)
    stats.record("GET", "/b", "200", 0.2, None, 0, 0)  # new route past the cap
    stats.record("GET", "/a", "500", 0.2, None, 0, 0)  # new status past the cap
    stats.record("GET", "/a", "503", 0.2, None, 0, 0)  # folded into the same overflow status
    stats.record_exception("GET", "/a", "KeyError")
    stats.record_exception("GET", "/a", "OSError")  # past the cap
    stats.record_exception("GET", "/a", "ValueError")
    values = read_all(mpdir)
    assert requests(values) == 4
    by_labels = {labels: v for (name, labels), v in values.items() if name == "http_requests_total"}
    assert by_labels[(("method", "GET"), ("route", "/a"), ("status", "__overflow__"))] == 2
    assert by_labels[(("method", "GET"), ("route", "__overflow__"), ("status", "200"))] == 1
    overflow = (("exception", "__overflow__"), ("method", "GET"), ("route", "/a"))
    assert values[("http_exceptions_total", overflow)] == 2
    assert (
        sample(
            reg,
            "http_exceptions_total",
            {"method": "GET", "route": "/a", "exception": "__overflow__"},
        )
        == 2
    )
    assert sample(reg, "asgi_perf_series_overflow_total", {"metric": "http_exceptions_total"}) == 2


def test_an_unlabelled_shared_metric_is_its_own_series(mpdir: Path) -> None:
    """A shared counter or histogram without labels counts on itself; describe() reads nothing."""
    s = shared.SharedStore(mpdir)
    jobs = shared.SharedMetric(s, "jobs", shared.COUNTER, "Jobs.", ())
    latency = shared.SharedMetric(s, "latency", shared.HISTOGRAM, "Latency.", (), BOUNDS)
    assert [m.name for m in jobs.describe()] == ["jobs"]
    assert shared.worker_files(mpdir) == []
    jobs.inc()
    jobs.inc(2)
    latency.observe(0.3)
    values = read_all(mpdir)
    assert values[("jobs_total", ())] == 3
    assert values[("latency_bucket", (("le", "0.5"),))] == 1
    assert values[("latency_count", ())] == 1
    assert [s.value for s in next(iter(jobs.collect())).samples] == [3.0]


def test_a_worker_file_without_slots_reads_as_nothing(mpdir: Path) -> None:
    """An index whose slot file is missing or empty (a worker that died while starting)."""
    keys = mpdir / "asgi_perf_1_00000000000000000001.keys"
    keys.write_bytes(b'[0, "jobs", "counter", "Jobs.", [], [], [], []]\n')
    assert list(shared.read_worker(keys)) == []
    shared.slots_path(keys).write_bytes(b"")
    assert list(shared.read_worker(keys)) == []


def test_fork_handling_of_a_store_that_never_counted(mpdir: Path) -> None:
    """A store dropped before fork, or one that never opened its files, needs nothing."""
    s = shared.SharedStore(mpdir)
    shared._after_fork(weakref.ref(s))
    assert shared.worker_files(mpdir) == []
    gone = shared.SharedStore(mpdir)
    ref = weakref.ref(gone)
    del gone
    shared._after_fork(ref)


def test_a_worker_file_that_fails_part_way_adds_nothing(mpdir: Path) -> None:
    """A worker file whose second series cannot be read adds none of its series to the merge: it
    is reported as skipped, so it must not count half of itself."""
    worker = shared.SharedStore(mpdir)
    slot = worker.allocate("jobs", shared.COUNTER, "Jobs.", [("kind", "a")])
    worker.values[slot] += 5
    # [slot, family, kind, help, label names, label values, ...]: a second series, kind="b",
    # whose slots lie far past the end of the slot file.
    record = json.loads(worker.keys_path.read_bytes().splitlines()[0])
    record[0], record[5] = 10**9, ["b"]
    with open(worker.keys_path, "ab") as f:
        f.write(json.dumps(record).encode() + b"\n")
    families: store.Families = {}
    failed = store.merge_shared(families, mpdir)
    assert [path for path, _ in failed] == [worker.keys_path]
    assert families == {}


def test_a_forked_child_without_files_of_its_own_never_writes_the_parents(tmp_path: Path) -> None:
    """A forked child that cannot open its own files (here: the directory is gone) counts in
    private memory: the parent's mapped file is never written by two processes."""
    directory = tmp_path / "gone"
    directory.mkdir()
    store = shared.SharedStore(directory)
    slot = store.allocate("jobs", shared.COUNTER, "Jobs.", [])
    store.values[slot] += 1
    parents = store.values
    shutil.rmtree(directory)
    shared._after_fork(weakref.ref(store))  # what os.fork() runs in the child
    store.values[slot] += 100
    other = store.allocate("more", shared.COUNTER, "More.", [])  # no index file: still a slot
    store.values[other] += 1
    assert parents[slot] == 1.0
    assert store.values[slot] == 100.0


def test_every_route_past_the_cap_shares_one_overflow_series_in_shared_memory(
    mpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many new routes arrive past the cap, they all land in the one ``__overflow__``
    series (one set of slots), counted exactly."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(mpdir))
    stats = stats_of(PerfRegistry(max_series_per_metric=1))
    stats.record("GET", "/a", "200", 0.2, None, 0, 0)
    for route in ("/b", "/c", "/d"):
        stats.record("GET", route, "200", 0.2, None, 1, 2)
    values = read_all(mpdir)
    by_labels = {labels: v for (name, labels), v in values.items() if name == "http_requests_total"}
    assert by_labels == {
        (("method", "GET"), ("route", "/a"), ("status", "200")): 1,
        (("method", "GET"), ("route", "__overflow__"), ("status", "200")): 3,
    }
    overflow = (("method", "GET"), ("route", "__overflow__"))
    assert values[("http_response_size_bytes_sum", overflow)] == 6

"""Native histograms in shared memory: the run layout, its writer and its lock-free reader
(asgi_perf._native_layout, and its writer SharedNativeHistogram in asgi_perf._shared_native)."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_perf import NativeHistograms
from asgi_perf import _native_layout as layout_mod
from asgi_perf import _shared as shared
from asgi_perf._native import (
    MIN_SCHEMA,
    NativeSnapshot,
    bucket_key,
    buckets_at_min_schema,
    make_snapshot,
)
from asgi_perf._native_layout import NativeLayout, read_run
from asgi_perf._native_snapshots import NativeParts, merged_snapshot
from asgi_perf._shared_native import SharedNativeHistogram

BOUNDS = (0.1, 0.5, 1.0)
VALUES = st.lists(
    st.one_of(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
        st.sampled_from([0.0, 1.0, 0.5, 2.0, -4.0, 1e-300, 5e-324, 1e300]),
    ),
    max_size=300,
)


@pytest.fixture
def mpdir(tmp_path: Path) -> Path:
    d = tmp_path / "mp"
    d.mkdir()
    return d


def new(
    store: shared.SharedStore, native: NativeHistograms, labels: tuple[str, str] = ("k", "v")
) -> SharedNativeHistogram:
    return SharedNativeHistogram(BOUNDS, store, "lat", "Latency.", [labels], native=native)


def read(store: shared.SharedStore) -> list[shared.Series]:
    return list(shared.read_worker(store.keys_path))


# -- the writer keeps what the in-process histogram keeps ----------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    values=VALUES,
    schema=st.integers(MIN_SCHEMA, 8),
    max_buckets=st.integers(1, 40),
    classic=st.booleans(),
)
def test_shared_native_equals_the_in_process_histogram(
    tmp_path_factory: pytest.TempPathFactory,
    values: list[float],
    schema: int,
    max_buckets: int,
    classic: bool,
) -> None:
    """Whatever is observed, the shared series reads back as NativeHistogram holds it: same
    schema after every reduction, same buckets, zero count, sum and classic buckets."""
    native = NativeHistograms(schema=schema, max_buckets=max_buckets, classic=classic)
    store = shared.SharedStore(tmp_path_factory.mktemp("mp"))
    hist = new(store, native)
    reference = native.histogram(BOUNDS)
    for v in values:
        hist.observe(v)
        reference.observe(v)
    assert hist.snapshot() == reference.snapshot()
    assert hist.cumulative() == reference.cumulative()
    if values:
        (series,) = read(store)
        assert series.kind == shared.NATIVE
        assert series.native == reference.snapshot()


def test_the_run_is_sized_for_every_bucket_schema_minus_4_can_hold() -> None:
    """A zero threshold of 0 lets values reach 264 buckets at schema -4, where the schema stops
    lowering: the run has room for them even with a small bucket limit."""
    assert buckets_at_min_schema(0.0) == 264
    assert NativeLayout.of(3, (3, 0.0, 10)).capacity == 265
    assert NativeLayout.of(3, (3, 2.0**-128, 160)).capacity == 161


def test_every_representable_magnitude_fits_a_small_bucket_limit(mpdir: Path) -> None:
    """Observations over the whole float range (zero threshold 0, bucket limit 2) stay within
    the run and read back exactly."""
    native = NativeHistograms(zero_threshold=0.0, max_buckets=2)
    store = shared.SharedStore(mpdir)
    hist = new(store, native)
    reference = native.histogram(BOUNDS)
    exponent = -1074
    while exponent < 1024:
        for sign in (1, -1):
            value = sign * math.ldexp(1.0, exponent)
            hist.observe(value)
            reference.observe(value)
        exponent += 7
    snap = hist.snapshot()
    assert snap == reference.snapshot()
    assert snap.schema == MIN_SCHEMA
    assert hist._used <= hist._layout.capacity


def test_a_reduction_rewrites_into_the_spare_area_and_flips(mpdir: Path) -> None:
    """Past max_buckets the schema drops; the buckets are written into the other area, the
    header flips to it and the sequence is even again (two increments per rewrite)."""
    store = shared.SharedStore(mpdir)
    hist = new(store, NativeHistograms(schema=3, max_buckets=4))
    for v in (1.0, 1.1, 1.2, 1.3):
        hist.observe(v)
    lay = hist._layout
    values = store.values
    slot = hist._slot
    assert (values[slot + lay.seq], values[slot + lay.area]) == (0, 0)
    hist.observe(1.5)  # the fifth bucket
    assert values[slot + lay.seq] == 2
    assert values[slot + lay.area] == 1
    snap = hist.snapshot()
    assert snap.schema < 3
    assert snap.observations == 5
    assert len(hist._positions) <= 4


# -- the reader ------------------------------------------------------------------------------------


class MidRewrite:
    """A view over the mapped slots that runs ``action`` once, when the reader takes its
    ``n``-th slice: what a writer in another process or thread does between two of its reads."""

    def __init__(self, view: Any, n: int, action: Any) -> None:
        self.view = view
        self.n = n
        self.action = action
        self.slices = 0

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, slice):
            self.slices += 1
            if self.slices == self.n:
                self.action()
        return self.view[item]


def wide(hist: SharedNativeHistogram, start: int, n: int) -> None:
    """``n`` observations, each in a new bucket at schema 3 (they force rewrites)."""
    for i in range(start, start + n):
        hist.observe(1.1 ** (i * 3))


def test_a_reader_that_races_two_rewrites_retries_and_reads_whole(mpdir: Path) -> None:
    """Two rewrites between the reader's copy of the header and of the bucket area (the second
    reuses the area the reader is copying): the sequence moved, the reader copies again and
    gets the histogram as it is after them, never a mix."""
    store = shared.SharedStore(mpdir)
    hist = new(store, NativeHistograms(schema=8, max_buckets=3))
    wide(hist, 0, 4)
    schema = hist._schema

    def two_rewrites() -> None:
        step = 100
        while hist._schema > schema - 2:
            step += 10
            hist.observe(2.0**step)

    racing = MidRewrite(store.values, 2, two_rewrites)
    _, snap, torn = read_run(racing, hist._slot, hist._layout)
    assert not torn
    assert racing.slices > 3  # it read again
    assert snap == read_run(store.values, hist._slot, hist._layout)[1]
    assert snap.schema <= schema - 2


def test_an_odd_sequence_is_retried_then_read_as_the_area_the_header_names(
    mpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer killed half-way through a rewrite: the sequence stays odd and the spare area
    half-written. The reader retries a bounded number of times, says the read was torn, and
    reads the area the header still names: the histogram before the rewrite, whole."""
    monkeypatch.setattr(layout_mod, "READ_RETRIES", 5)
    store = shared.SharedStore(mpdir)
    hist = new(store, NativeHistograms(schema=3, max_buckets=4))
    wide(hist, 0, 4)
    before = hist.snapshot()
    lay = hist._layout
    values = store.values
    slot = hist._slot
    values[slot + lay.seq] += 1  # what _reduce does first...
    spare = slot + lay.area_at(1)
    values[spare] = 99.0  # ... then a garbage half of the new area, and no flip
    values[spare + 1] = 1.0
    _, snap, torn = read_run(values, slot, lay)
    assert torn
    assert snap == before


def test_a_worker_killed_inside_a_rewrite_loses_nothing(mpdir: Path) -> None:
    """A real worker SIGKILLed while its native series is being rewritten (stopped between the
    odd sequence and the flip): the reader gets every observation it had made, from the area
    the header still names."""
    script = f"""
import os, signal, sys
from asgi_perf import NativeHistograms
from asgi_perf import _shared as shared
from asgi_perf._shared_native import SharedNativeHistogram
store = shared.SharedStore({str(mpdir)!r})
hist = SharedNativeHistogram(
    (0.1,), store, "lat", "Latency.", [], native=NativeHistograms(schema=3, max_buckets=4)
)
for i in range(4):
    hist.observe(1.1 ** (i * 3))
values = store.values
class Stop:
    def __getattr__(self, name):
        return getattr(values, name)
    def __getitem__(self, i):
        return values[i]
    def __setitem__(self, i, v):
        values[i] = v
        if i == hist._slot + hist._layout.area_at(1) + 3:
            print("inside", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
store.values = Stop()
hist.observe(1.1 ** 12)
"""
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"inside\n"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    (keys,) = shared.worker_files(mpdir)
    (series,) = shared.read_worker(keys)
    assert series.native is not None
    # The bucket that set off the rewrite was appended before it began: all five are there, at
    # the schema before the rewrite.
    assert series.native.observations == 5
    assert series.native.schema == 3
    assert series.values[1] == 5


def test_a_second_process_reading_during_rewrites_never_sees_a_torn_histogram(
    mpdir: Path,
) -> None:
    """A real writer process makes many rewrites (new series, a bucket limit of 2, values over
    many magnitudes) while this process reads its file continuously: every series' count only
    grows from read to read, and the last read holds every observation."""
    script = f"""
from asgi_perf import NativeHistograms
from asgi_perf import _shared as shared
from asgi_perf._shared_native import SharedNativeHistogram
store = shared.SharedStore({str(mpdir)!r})
native = NativeHistograms(schema=8, max_buckets=2)
for s in range(60):
    hist = SharedNativeHistogram((0.1,), store, "lat", "L.", [("s", str(s))], native=native)
    for i in range(300):
        hist.observe(1.01 ** (i * 37 % 2000) * (-1) ** i)
print("done", flush=True)
"""
    seen: dict[tuple[tuple[str, str], ...], int] = {}
    reads = 0
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as proc:
        while proc.poll() is None:
            files = shared.worker_files(mpdir)
            if not files:
                continue
            reads += 1
            for series in shared.read_worker(files[0]):
                assert series.native is not None
                count = series.native.observations
                assert count >= seen.get(series.labels, 0)
                assert count <= 300
                seen[series.labels] = count
        assert proc.stdout is not None
        assert proc.stdout.read() == b"done\n"
    assert reads > 1
    final = {s.labels: s.native for s in shared.read_worker(shared.worker_files(mpdir)[0])}
    assert len(final) == 60
    assert all(
        isinstance(n, NativeSnapshot) and n.observations == 300 and n.schema < 8
        for n in final.values()
    )


# -- fork, a full file ---------------------------------------------------------------------------


def test_a_forked_child_starts_its_native_series_from_zero(mpdir: Path) -> None:
    """After fork the child writes files of its own, zeroed, at the same offsets: its native
    series starts again at the configured schema with no buckets, and the parent's stays whole
    in the parent's file."""
    store = shared.SharedStore(mpdir)
    hist = new(store, NativeHistograms(schema=3, max_buckets=4))
    wide(hist, 0, 6)
    parent = hist.snapshot()
    assert parent.schema < 3
    parent_keys = store.keys_path
    shared._after_fork(weakref.ref(store))  # what os.fork() runs in the child
    assert hist._positions == {}
    assert hist._schema == 3
    assert hist.snapshot().observations == 0
    hist.observe(1.0)
    child = hist.snapshot()
    assert (child.observations, child.schema) == (1, 3)
    (series,) = shared.read_worker(parent_keys)
    assert series.native == parent


def test_a_real_fork_keeps_parent_and_child_apart(mpdir: Path) -> None:
    """os.fork() (gunicorn --preload): both keep observing their own series; each file holds
    exactly its process' observations."""
    store = shared.SharedStore(mpdir)
    hist = new(store, NativeHistograms(schema=3, max_buckets=4))
    wide(hist, 0, 6)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        try:
            wide(hist, 0, 3)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    wide(hist, 0, 1)
    counts = sorted(
        s.native.observations
        for keys in shared.worker_files(mpdir)
        for s in shared.read_worker(keys)
        if s.native is not None
    )
    assert counts == [3, 7]


def test_a_full_file_raises_store_full_and_writes_nothing(mpdir: Path) -> None:
    """No room for the run: StoreFull, as for every shared series (the instrumentation around
    it counts the error), and the next observation tries again."""
    store = shared.SharedStore(mpdir, capacity=100)
    hist = new(store, NativeHistograms())
    with pytest.raises(shared.StoreFull):
        hist.observe(1.0)
    assert not hist.allocated
    assert hist.snapshot().observations == 0
    with pytest.raises(shared.StoreFull):
        hist.observe(1.0)


def test_a_bad_native_index_line_is_refused(mpdir: Path) -> None:
    """An index line of kind native without a sane configuration is not one of ours."""
    line = b'[0, "lat", "native", "L.", [], [], [], [], ["3", 0.0, 160]]\n'
    with pytest.raises(ValueError, match="native configuration"):
        shared.parse_index(line)


# -- what a reader takes from the stored pairs ----------------------------------------------------
def _stored_buckets(stored: list[float]) -> tuple[dict[int, int], dict[int, int]]:
    """The reader's rule, pair by pair: a count is truncated, a pair whose count is not above
    zero is left out, a repeated bucket adds up (codes are only converted for the pairs kept)."""
    positive: dict[int, int] = {}
    negative: dict[int, int] = {}
    for i in range(0, len(stored), 2):
        count = int(stored[i + 1])
        if count > 0:
            code = int(stored[i])
            side = negative if code & 1 else positive
            side[code >> 1] = side.get(code >> 1, 0) + count
    return positive, negative


STORED = st.lists(
    st.tuples(
        st.one_of(st.integers(-400, 400).map(float), st.sampled_from([0.5, -3.25, 1e6])),
        st.one_of(
            st.integers(1, 50).map(float),
            st.sampled_from([0.0, -1.0, 0.5, 2.75, 1e15]),
        ),
    ),
    max_size=30,
).map(lambda pairs: [x for pair in pairs for x in pair])


@settings(max_examples=300, deadline=None)
@given(stored=STORED, schema=st.integers(MIN_SCHEMA, 8))
def test_any_stored_pairs_read_as_the_pair_by_pair_rule(stored: list[float], schema: int) -> None:
    """Whatever the pairs hold (repeated codes, counts of zero, negative or not whole, codes
    that are not whole), the series reads as taking them pair by pair would."""
    taken = layout_mod._pairs(stored)
    snap = merged_snapshot([NativeParts(schema, 0.0, 0, 0.0, taken)])
    positive, negative = _stored_buckets(stored)
    assert snap == make_snapshot(schema, 0.0, 0, 0.0, positive, negative)


@pytest.mark.parametrize(
    "stored",
    [[1.0, math.nan], [math.nan, 1.0], [2.0, math.inf], [math.inf, 3.0], [4.0, 1.0, math.nan, 2.0]],
)
def test_stored_pairs_that_are_no_numbers_fail_as_pair_by_pair(stored: list[float]) -> None:
    """A NaN or infinite value where the rule converts it fails the read with the error the
    rule raises (the scrape then leaves that worker's file out and reports it)."""
    with pytest.raises((ValueError, OverflowError)) as want:
        _stored_buckets(stored)
    with pytest.raises(want.type):
        layout_mod._pairs(stored)


def test_a_stored_nan_code_without_a_count_is_left_out() -> None:
    """A pair with no count is left out without its code being read, as pair by pair."""
    assert layout_mod._pairs([math.nan, 0.0, 4.0, 2.0]) == [4, 2]


@pytest.mark.parametrize("used", [-5.0, 1e9])
def test_a_used_count_out_of_range_is_clamped(mpdir: Path, used: float) -> None:
    """A run whose count of used pairs is negative or past its capacity (a foreign or corrupt
    file) reads none of them, or every pair its area holds (never past it: the empty pairs
    after the real ones have no count and are left out)."""
    store = shared.SharedStore(mpdir)
    hist = new(store, NativeHistograms(schema=0))
    for v in (1.0, 4.0, 16.0):
        hist.observe(v)
    want = hist.snapshot()
    lay = hist._layout
    area = hist._slot + lay.area_at(0)
    store.values[area + 1] = used
    _, parts, torn = layout_mod.read_parts(store.values, hist._slot, lay)
    assert not torn
    if used < 0:
        assert list(parts.pairs) == []
    else:
        assert merged_snapshot([parts]) == want


# -- infinities ----------------------------------------------------------------------------------


def test_infinity_counts_in_the_highest_finite_bucket() -> None:
    """``frexp`` gives infinity no exponent: it is counted in the bucket of the largest finite
    float (either sign), not in the bucket around 1."""
    hist = NativeHistograms(schema=3).histogram(())
    hist.observe(math.inf)
    hist.observe(-math.inf)
    top = bucket_key(sys.float_info.max, 3)
    assert hist.positive == {top: 1}
    assert hist.negative == {top: 1}
    assert top > bucket_key(1.0, 3) + 1000


def test_infinities_stay_inside_the_run(mpdir: Path) -> None:
    """Infinities and the largest floats at the lowest schema with a zero threshold above 1 and a
    one-bucket limit: every bucket fits the run, the series equals the in-process histogram,
    and the series allocated after it is untouched."""
    store = shared.SharedStore(mpdir)
    native = NativeHistograms(schema=-3, zero_threshold=1e300, max_buckets=1, classic=False)
    first = SharedNativeHistogram((), store, "lat", "L.", [("s", "a")], native=native)
    second = SharedNativeHistogram((), store, "lat", "L.", [("s", "b")], native=native)
    reference = native.histogram(())
    first.observe(1e301)
    reference.observe(1e301)
    second.observe(5e300)
    second.observe(5e300)
    for value in (1e308, -2e300, -1e308, math.inf, -math.inf):
        first.observe(value)
        reference.observe(value)
        assert first._used <= first._layout.capacity
    got, want = first.snapshot(), reference.snapshot()
    assert math.isnan(got.sum)  # inf + -inf, as in one process
    assert math.isnan(want.sum)
    assert got._replace(sum=0.0) == want._replace(sum=0.0)
    after = second.snapshot()
    assert (after.observations, after.sum) == (2, 1e301)
    by_label = {dict(series.labels)["s"]: series for series in read(store)}
    natives = {label: series.native for label, series in by_label.items()}
    assert [n.observations if n else None for n in (natives["a"], natives["b"])] == [6, 2]


def test_a_run_never_writes_past_its_area(mpdir: Path) -> None:
    """Should a series ever need more pairs than its area holds (the layout sizes areas so that
    it cannot), the writer refuses the bucket rather than write into the next series."""
    store = shared.SharedStore(mpdir)
    hist = new(store, NativeHistograms(schema=3, max_buckets=100))
    hist.observe(1.0)
    hist._layout = dataclasses.replace(hist._layout, capacity=1)
    with pytest.raises(shared.StoreFull):
        hist.observe(1000.0)
    assert hist._used == 1

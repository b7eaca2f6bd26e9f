"""Bounded labels: name limiters, series caps, histogram maths."""

from __future__ import annotations

import math
import threading

import pytest

from asgi_perf import OTHER
from asgi_perf._histogram import PlainHistogram, check_buckets, quantile
from asgi_perf._labels import NameLimiter, SeriesCap


def test_name_limiter_first_n() -> None:
    """The first N distinct names pass; later ones become __other__; known ones keep passing."""
    limit = NameLimiter(max_names=2)
    assert [limit(n) for n in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]
    assert len(limit) == 2


def test_name_limiter_allow_list() -> None:
    """With an allow-list, only those names pass, however many others arrive."""
    limit = NameLimiter(allow=["join", "leave"])
    assert [limit(n) for n in ("join", "x", "leave", "y")] == ["join", OTHER, "leave", OTHER]


def test_name_limiter_rejects_bad_config() -> None:
    """max_names must be positive."""
    with pytest.raises(ValueError, match="max_names"):
        NameLimiter(max_names=0)


def test_name_limiter_is_thread_safe() -> None:
    """Many threads racing new names never admit more than max_names."""
    limit = NameLimiter(max_names=50)

    def work(base: int) -> None:
        for i in range(200):
            limit(f"n{base}-{i}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(limit) == 50


def test_series_cap() -> None:
    """SeriesCap creates children up to the limit, then hands out one overflow child."""
    overflowed = 0

    def on_overflow() -> None:
        nonlocal overflowed
        overflowed += 1

    cap: SeriesCap[tuple[str, ...]] = SeriesCap(
        lambda key: key, limit=2, overflow_key=("OV",), on_overflow=on_overflow
    )
    assert cap.get(("a",)) == ("a",)
    assert cap.get(("b",)) == ("b",)
    assert cap.get(("c",)) == ("OV",)
    assert cap.get(("d",)) == ("OV",)
    assert cap.get(("a",)) == ("a",)
    assert overflowed == 2
    assert len(cap) == 3
    assert dict(cap.items()) == {("a",): ("a",), ("b",): ("b",), ("OV",): ("OV",)}


def test_histogram_le_semantics() -> None:
    """A value equal to a bound lands in that bound's bucket (Prometheus 'le')."""
    h = PlainHistogram((0.1, 1.0))
    for v in (0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    buckets, total, count = h.cumulative()
    assert buckets == [("0.1", 1), ("1.0", 3), ("+Inf", 4)]
    assert total == pytest.approx(8.6)
    assert count == h.count == 4


@pytest.mark.parametrize(
    ("given", "expected"),
    [([1, 2, float("inf")], (1.0, 2.0)), ((0.5,), (0.5,))],
)
def test_check_buckets_accepts(given: list[float], expected: tuple[float, ...]) -> None:
    """Increasing finite bounds are accepted; a trailing +Inf is dropped."""
    assert check_buckets(given) == expected


@pytest.mark.parametrize("bad", [[], [2, 1], [1, 1], [float("nan")], ["x"], None, [float("-inf")]])
def test_check_buckets_rejects(bad: object) -> None:
    """Empty, unordered, repeated, NaN, infinite or non-numeric bounds raise ValueError."""
    with pytest.raises(ValueError, match="buckets must be"):
        check_buckets(bad)  # type: ignore[arg-type]


def test_quantile_interpolates_like_promql() -> None:
    """quantile() interpolates linearly inside the bucket, as histogram_quantile does."""
    buckets = [(0.1, 50.0), (0.2, 100.0), (math.inf, 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.15)
    assert math.isnan(quantile(0.5, []))
    assert math.isnan(quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))
    # Past the last finite bound: the largest finite bound.
    assert quantile(0.99, [(0.1, 1.0), (math.inf, 10.0)]) == 0.1
    # A bucket with no new observations at the rank: its upper bound.
    assert quantile(0.0, [(0.1, 0.0), (0.2, 5.0), (math.inf, 5.0)]) == pytest.approx(0.1)


def test_name_limiter_refuses_long_and_non_string_names() -> None:
    """A name longer than max_length (or not a string) never becomes a label value."""
    limit = NameLimiter(max_names=10, max_length=5)
    assert limit("short") == "short"
    assert limit("toolong") == OTHER
    assert limit(42) == OTHER  # type: ignore[arg-type]
    assert len(limit) == 1
    with pytest.raises(ValueError, match="max_length"):
        NameLimiter(max_length=0)

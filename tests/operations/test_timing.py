"""The timing and custom-counter API: @registry.timed, registry.timer, registry.count, stats."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from asgi_perf import OTHER, PerfRegistry
from asgi_perf.operations._keys import TIMINGS
from asgi_perf.operations._timing import (
    ERR_GENERATOR,
    ERR_NAME,
    ERR_NOT_CALLABLE,
    ERR_VALUE,
    Timings,
)
from asgi_perf.testing import sample

from .._ops import exact


def test_timed_sync_function_records_each_call(registry: PerfRegistry) -> None:
    """A decorated sync function keeps its result and is counted once per call."""

    @registry.timed("build_report")
    def build(x: int) -> int:
        return x * 2

    assert [build(i) for i in range(3)] == [0, 2, 4]
    assert (
        sample(registry, "app_timer_duration_seconds", {"name": "build_report"}, suffix="_count")
        == 3
    )
    assert build.__name__ == "build"


@pytest.mark.anyio
async def test_timed_async_function_times_the_await(registry: PerfRegistry) -> None:
    """An async function is timed until its coroutine finishes, not until it is created."""

    @registry.timed("fetch")
    async def fetch() -> str:
        await asyncio.sleep(0.02)
        return "ok"

    assert await fetch() == "ok"
    stats = registry.stats("fetch")
    assert stats["count"] == 1
    assert stats["min"] is not None
    assert stats["min"] >= 0.02


def test_timed_default_name_is_the_qualname(registry: PerfRegistry) -> None:
    """Without a name the timer is called after the function's module and qualname."""

    @registry.timed()
    def work() -> None:
        return None

    work()
    name = f"{__name__}.test_timed_default_name_is_the_qualname.<locals>.work"
    assert registry.stats(name)["count"] == 1


def test_exceptions_are_recorded_as_errors_and_reraised(registry: PerfRegistry) -> None:
    """A raising call keeps its exception, and counts as an error with its duration."""

    @registry.timed("boom")
    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        boom()
    with pytest.raises(ValueError, match="inner"), registry.timer("block"):
        raise ValueError("inner")
    assert registry.stats("boom")["errors"] == 1
    assert registry.stats("block")["errors"] == 1
    assert sample(registry, "app_timer_errors_total", {"name": "boom"}) == 1
    assert sample(registry, "app_timer_duration_seconds", {"name": "boom"}, suffix="_count") == 1


@pytest.mark.anyio
async def test_async_exceptions_are_recorded(registry: PerfRegistry) -> None:
    """An async function that raises is recorded as an error; so is an ``async with`` block."""

    @registry.timed("afail")
    async def afail() -> None:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        await afail()
    timer = registry.timer("ablock")
    async with timer:
        await asyncio.sleep(0)
    assert timer.elapsed is not None
    assert registry.stats("afail")["errors"] == 1
    assert registry.stats("ablock")["count"] == 1


def test_stats_exact_extremes_and_clamped_percentiles(registry: PerfRegistry) -> None:
    """min/max/avg are exact; bucket-estimated percentiles never leave [min, max]."""
    timings = Timings.of(registry)
    for value in (0.002, 0.004, 0.006, 0.2):
        timings.record("op", value)
    stats = registry.stats("op")
    assert stats["count"] == 4
    assert stats["min"] == 0.002
    assert stats["max"] == 0.2
    assert stats["avg"] == pytest.approx(0.053)
    assert stats["total"] == pytest.approx(0.212)
    assert stats["p50"] is not None
    assert stats["p99"] is not None
    assert 0.0025 <= stats["p50"] <= 0.01
    assert stats["p99"] <= 0.2
    timings.record("single", 0.0011)
    single = registry.stats("single")
    assert single["p50"] == single["p99"] == 0.0011


def test_stats_of_unknown_timer(registry: PerfRegistry) -> None:
    """A timer that never ran reports zero counts and no figures."""
    stats = registry.stats("never")
    assert stats["count"] == 0
    assert stats["p95"] is None
    assert stats["avg"] is None


def test_count_adds_to_custom_counters(registry: PerfRegistry) -> None:
    """registry.count adds 1 by default, or the given amount."""
    registry.count("orders")
    registry.count("orders", 4)
    assert sample(registry, "app_events_total", {"name": "orders"}) == 5
    assert Timings.of(registry).counters() == {"orders": 5}


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), True, "3"])
def test_count_rejects_bad_values(registry: PerfRegistry, value: object) -> None:
    """Counters only go up by finite numbers."""
    with pytest.raises(ValueError, match=exact(ERR_VALUE.format(value))):
        registry.count("x", value)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", 3, None])
def test_bad_names_fail_loudly(registry: PerfRegistry, name: object) -> None:
    """Names must be non-empty strings: a configuration error, raised at once."""
    with pytest.raises(ValueError, match=exact(ERR_NAME.format(name))):
        registry.timer(name)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=exact(ERR_NAME.format(name))):
        registry.count(name)  # type: ignore[arg-type]
    if name is not None:
        with pytest.raises(ValueError, match=exact(ERR_NAME.format(name))):
            registry.timed(name)  # type: ignore[arg-type]


def test_generators_and_non_callables_are_refused(registry: PerfRegistry) -> None:
    """Generators cannot be timed by a decorator (the call returns before the work)."""

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(ValueError, match=exact(ERR_GENERATOR.format(gen))):
        registry.timed("g")(gen)
    with pytest.raises(ValueError, match=exact(ERR_NOT_CALLABLE.format(42))):
        registry.timed("n")(42)  # type: ignore[arg-type]


def test_names_are_bounded() -> None:
    """Past max_names distinct names, new timers and counters share the __other__ series."""
    registry = PerfRegistry()
    timings = Timings(registry, max_names=2)
    for name in ("a", "b", "c", "d"):
        timings.record(name, 0.001)
        timings.count(name)
    assert timings.names() == sorted(["a", "b", OTHER])
    assert timings.stats(OTHER)["count"] == 2
    assert timings.counters()[OTHER] == 2


def test_threads_lose_no_observation(registry: PerfRegistry) -> None:
    """Timers used from many threads at once keep every observation."""

    @registry.timed("threaded")
    def work() -> None:
        return None

    def loop() -> None:
        for _ in range(500):
            work()

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert registry.stats("threaded")["count"] == 2000


def test_recording_failure_is_reported_not_raised(registry: PerfRegistry) -> None:
    """A failure inside recording is counted as an instrumentation error; the caller goes on."""
    timings = Timings.of(registry)
    timings.record("ok", "not-a-number")  # type: ignore[arg-type]
    assert sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "timing"}) == 1


def test_one_timings_per_registry(registry: PerfRegistry) -> None:
    """Every timing call on a registry reports into one shared store."""
    assert Timings.of(registry) is Timings.of(registry)
    registry.count("x")
    assert registry.find_component(TIMINGS) is Timings.of(registry)

"""The framework-free coalescer, driven by a fake clock: triggers, order, overflow, shutdown."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from asgi_perf.socketio import _batching
from asgi_perf.socketio._batching import Coalescer

pytestmark = pytest.mark.anyio


class FakeClock:
    """Time moves only when the test calls ``advance``; sleepers wake when their time comes."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.now + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for due, future in list(self.sleepers):
            if due <= self.now and not future.done():
                future.set_result(None)
        self.sleepers = [(d, f) for d, f in self.sleepers if not f.done()]
        for _ in range(5):  # let the woken timer run its flush
            await asyncio.sleep(0)


class Recorder:
    def __init__(self, clock: FakeClock, fail: bool = False) -> None:
        self.sent: list[tuple[Any, list[Any], float, str]] = []
        self.drops: list[tuple[str, int]] = []
        self.errors: list[BaseException] = []
        self.fail = fail
        self.clock = clock

    async def send(self, key: Any, items: list[Any], waited: float, reason: str) -> None:
        await asyncio.sleep(0)  # a real send yields: order must survive it
        if self.fail:
            raise ConnectionError("backend down")
        self.sent.append((key, list(items), waited, reason))

    def coalescer(self, **options: Any) -> Coalescer[Any]:
        config: dict[str, Any] = {
            "max_items": 10,
            "max_bytes": None,
            "max_delay": 0.05,
            "max_pending": 1000,
            "overflow": "block",
            **options,
        }
        return Coalescer(
            self.send,
            on_drop=lambda reason, n: self.drops.append((reason, n)),
            on_error=self.errors.append,
            clock=self.clock,
            sleep=self.clock.sleep,
            **config,
        )

    def items(self, key: Any = "k") -> list[Any]:
        return [i for k, batch, _, _ in self.sent if k == key for i in batch]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.mark.parametrize("max_items", [1, 7, 10, 100])
async def test_items_trigger_within_max_delay(clock: FakeClock, max_items: int) -> None:
    """100 adds within max_delay become ceil(100/max_items) sends; the rest leaves on the delay."""
    rec = Recorder(clock)
    core = rec.coalescer(max_items=max_items, max_pending=1000)
    for i in range(100):
        await core.add("k", i)
    await clock.advance(0.05)
    assert len(rec.sent) == math.ceil(100 / max_items)
    assert rec.items() == list(range(100))
    assert {r for *_, r in rec.sent} <= {"items", "delay"}
    await core.aclose()


async def test_delay_trigger_waits_exactly_max_delay(clock: FakeClock) -> None:
    """A lone item leaves when its batch is max_delay old, not before; its wait is recorded."""
    rec = Recorder(clock)
    core = rec.coalescer()
    await core.add("k", "a")
    await clock.advance(0.049)
    assert rec.sent == []
    await clock.advance(0.001)
    [(key, items, waited, reason)] = rec.sent
    assert (key, items, reason) == ("k", ["a"], "delay")
    assert waited == pytest.approx(0.05)
    assert core.pending == 0
    await core.aclose()


async def test_bytes_trigger_never_exceeds_max_bytes(clock: FakeClock) -> None:
    """A batch leaves before an item would push it past max_bytes; an item of max_bytes or more
    leaves alone at once."""
    rec = Recorder(clock)
    core = rec.coalescer(max_bytes=100)
    for i in range(5):
        await core.add("k", i, 30)  # 30+30+30 = 90; the 4th would make 120
    assert [(batch, r) for _, batch, _, r in rec.sent] == [([0, 1, 2], "bytes")]
    await core.add("k", "big", 150)
    assert [(batch, r) for _, batch, _, r in rec.sent][1:] == [
        ([3, 4], "bytes"),
        (["big"], "bytes"),
    ]
    await core.aclose()


async def test_order_across_batched_and_unbatched(clock: FakeClock) -> None:
    """An unbatched send to a key goes out after that key's pending batch, not before it;
    other keys are unaffected."""
    rec = Recorder(clock)
    core = rec.coalescer()
    out: list[Any] = []
    await core.add("k", 1)
    await core.add("other", "x")
    await core.add("k", 2)

    async def alone() -> str:
        out.extend(rec.items())
        return "sent"

    assert await core.run_in_order("k", alone) == "sent"
    assert out == [1, 2]
    assert rec.sent[0][3] == "ordering"
    await core.add("k", 3)
    await core.aclose()
    assert rec.items() == [1, 2, 3]
    assert rec.items("other") == ["x"]


async def test_concurrent_emitters_keep_per_key_order(clock: FakeClock) -> None:
    """Two tasks adding to the same key while sends yield: the key's items arrive in add order."""
    rec = Recorder(clock)
    core = rec.coalescer(max_items=3)

    async def producer(start: int) -> None:
        for i in range(start, start + 50):
            await core.add("k", i)

    await producer(0)
    await asyncio.gather(producer(100), core.flush())
    await core.aclose()
    assert rec.items() == [*range(50), *range(100, 150)]


async def test_overflow_drop_newest(clock: FakeClock) -> None:
    """drop_newest: past max_pending the new item is dropped and counted; nothing else is lost."""
    rec = Recorder(clock)
    core = rec.coalescer(max_items=10, max_pending=10, overflow="drop_newest", max_delay=1)
    for i in range(9):
        await core.add(f"k{i % 3}", i)
    await core.add("k0", 9)  # k0 reaches... pending 10
    await core.add("k1", 10)
    assert rec.drops == [("drop_newest", 1)]
    await core.aclose()
    assert sorted(i for _, b, _, _ in rec.sent for i in b) == list(range(10))


async def test_overflow_drop_oldest(clock: FakeClock) -> None:
    """drop_oldest: the oldest buffered item makes room and is counted."""
    rec = Recorder(clock)
    core = rec.coalescer(max_items=5, max_pending=5, overflow="drop_oldest")
    await core.add("a", "a0")
    for i in range(4):
        await core.add("b", i)
    await core.add("b", 4)  # full: a0, the oldest, makes room
    assert rec.drops == [("drop_oldest", 1)]
    for i in range(5, 9):
        await core.add("c", i)
    await core.add("d", "d0")
    await core.add("d", "d1")  # full again: the oldest is now c's first item
    assert rec.drops == [("drop_oldest", 1)] * 2
    await core.aclose()
    assert rec.items("a") == []
    assert rec.items("b") == [0, 1, 2, 3, 4]
    assert rec.items("c") == [6, 7, 8]
    assert rec.items("d") == ["d0", "d1"]


async def test_overflow_block_flushes_oldest(clock: FakeClock) -> None:
    """block: past max_pending the caller waits while the oldest batch is sent; nothing dropped."""
    rec = Recorder(clock)
    core = rec.coalescer(max_items=10, max_pending=10, overflow="block")
    for i in range(25):
        await core.add(f"k{i % 5}", i)
    assert rec.drops == []
    assert "full" in {r for *_, r in rec.sent}
    await core.aclose()
    assert sorted(i for _, b, _, _ in rec.sent for i in b) == list(range(25))


async def test_shutdown_mid_stream_delivers_everything(clock: FakeClock) -> None:
    """aclose() while a producer is mid-stream: every item accepted (its add() returned) is
    delivered exactly once, an add() waiting through aclose() included; later adds raise."""
    rec = Recorder(clock)
    core = rec.coalescer(max_items=7)

    accepted: list[int] = []

    async def producer() -> None:
        for i in range(5000):
            try:
                await core.add(f"k{i % 4}", i)
            except _batching.Closed:
                continue
            accepted.append(i)

    task = asyncio.ensure_future(producer())
    for _ in range(30):
        await asyncio.sleep(0)
    await core.aclose()
    await task
    await core.aclose()  # idempotent
    assert 0 < len(accepted) < 5000
    assert sorted(i for _, b, _, _ in rec.sent for i in b) == accepted
    assert core.pending == 0
    assert rec.drops == []


async def test_failed_send_is_counted_not_raised(clock: FakeClock) -> None:
    """A send that raises drops its items under send_error and reports the error; the caller
    and the timer keep going."""
    rec = Recorder(clock, fail=True)
    core = rec.coalescer(max_items=2)
    await core.add("k", 1)
    await core.add("k", 2)
    await core.add("k", 3)
    await clock.advance(0.05)
    assert rec.drops == [("send_error", 2), ("send_error", 1)]
    assert len(rec.errors) == 2
    await core.aclose()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_items": 0}, _batching.ERR_MAX_ITEMS),
        ({"max_items": True}, _batching.ERR_MAX_ITEMS),
        ({"max_bytes": 0}, _batching.ERR_MAX_BYTES),
        ({"max_delay": 0}, _batching.ERR_MAX_DELAY),
        ({"max_delay": float("inf")}, _batching.ERR_MAX_DELAY),
        ({"max_delay": "1"}, _batching.ERR_MAX_DELAY),
        ({"max_pending": 5}, _batching.ERR_MAX_PENDING),
        ({"overflow": "wait"}, _batching.ERR_OVERFLOW),
    ],
)
async def test_bad_configuration(clock: FakeClock, options: dict[str, Any], message: str) -> None:
    """Each bad option is a ValueError with its message at construction."""
    rec = Recorder(clock)
    with pytest.raises(ValueError, match=message.split("{", maxsplit=1)[0].rstrip(", ")[:20]):
        rec.coalescer(**options)

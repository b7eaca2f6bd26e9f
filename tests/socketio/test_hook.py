"""The hook in-process: a real AsyncServer under an in-loop uvicorn server."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest
import socketio

from asgi_perf import PerfRegistry
from asgi_perf.socketio import Batcher, instrument_socketio
from asgi_perf.socketio import _hook as sio_mod
from asgi_perf.socketio._client import ERR_NOT_CLIENT, unbatch
from asgi_perf.testing import sample, samples, series

from .._socketio import connect as open_client
from .._socketio import serving, settle

pytestmark = pytest.mark.anyio


async def test_counts_events_bytes_and_handler_time(
    live: tuple[socketio.AsyncServer, str], registry: PerfRegistry
) -> None:
    """Received/emitted events, bytes both ways and handler durations are counted per namespace
    and event; the app's handler is called once per event."""
    sio, base = live
    seen: list[Any] = []

    async def echo(sid: str, data: Any) -> Any:
        seen.append(data)
        await sio.emit("reply", data, to=sid, namespace="/chat")
        return data

    sio.on("echo", echo, namespace="/chat")

    instrument_socketio(sio, registry=registry)
    c = await open_client(base, namespaces=["/chat"])
    assert await c.call("echo", "héllo", namespace="/chat") == "héllo"
    await c.emit("echo", b"\x00\x01", namespace="/chat")
    await settle()
    assert len(seen) == 2
    labels = {"namespace": "/chat", "event": "echo"}
    assert sample(registry, "socketio_events_received_total", labels) == 2
    assert sample(registry, "socketio_handler_duration_seconds", labels, suffix="_count") == 2
    emitted = {"namespace": "/chat", "event": "reply"}
    assert sample(registry, "socketio_events_emitted_total", emitted) == 2
    # the binary attachment counts under the namespace of its packet
    received = sample(registry, "socketio_received_bytes_total", {"namespace": "/chat"})
    assert received is not None
    assert received > len('2/chat,1["echo","héllo"]')
    sent = sample(registry, "socketio_sent_bytes_total", {"namespace": "/chat"})
    assert sent is not None
    assert sent > 0
    await c.disconnect()


async def test_uninstall_restores_and_install_is_idempotent(
    live: tuple[socketio.AsyncServer, str], registry: PerfRegistry
) -> None:
    """A second instrument call returns the same hook; another registry is refused; uninstall
    puts every original back and stops counting; the class is never touched."""
    sio, base = live
    before = {name: getattr(sio, name) for name in ("_handle_connect", "emit", "disconnect")}
    message_handler = sio.eio.handlers["message"]
    hook = instrument_socketio(sio, registry=registry)
    assert instrument_socketio(sio, registry=registry) is hook
    with pytest.raises(ValueError, match="another registry"):
        instrument_socketio(sio, registry=PerfRegistry())
    assert "emit" not in vars(socketio.AsyncServer) or vars(socketio.AsyncServer)["emit"] is (
        socketio.AsyncServer.emit
    )
    hook.uninstall()
    hook.uninstall()
    assert {name: getattr(sio, name) for name in before} == before
    assert sio.eio.handlers["message"] is message_handler
    assert "send_packet" not in vars(sio.eio)
    c = await open_client(base)
    await settle()
    assert (
        sample(registry, "socketio_connects_total", {"namespace": "/", "outcome": "accepted"})
        is None
    )
    await c.disconnect()


async def test_wrapped_on_top_then_uninstalled_passes_through(
    live: tuple[socketio.AsyncServer, str], registry: PerfRegistry
) -> None:
    """If something wraps our wrapper, uninstall leaves the chain intact and stops counting."""
    sio, base = live
    hook = instrument_socketio(sio, registry=registry)
    ours = sio.emit
    outer_calls: list[str] = []

    async def outer(event: str, *args: Any, **kwargs: Any) -> Any:
        outer_calls.append(event)
        return await ours(event, *args, **kwargs)

    sio.emit = outer
    hook.uninstall()
    assert sio.emit is outer
    c = await open_client(base)
    await sio.emit("x", 1)
    await c.disconnect()
    await settle()
    assert outer_calls == ["x"]
    assert series(registry, "socketio_events_emitted_total") == 0
    assert series(registry, "socketio_disconnects_total") == 0


async def test_rejections_unknown_namespace_and_server_disconnect(
    live: tuple[socketio.AsyncServer, str], registry: PerfRegistry
) -> None:
    """A refused connect (ConnectionRefusedError) and a connect to an unserved namespace are
    rejected; the unserved namespace is labelled __other__; a server kick is server_disconnect."""
    sio, base = live

    async def connect(sid: str, environ: Any, auth: Any) -> None:
        if auth:
            raise socketio.exceptions.ConnectionRefusedError("no")

    sio.on("connect", connect)

    instrument_socketio(sio, registry=registry)
    bad = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await bad.connect(base, auth={"x": 1}, transports=["websocket"], wait_timeout=5)
    await bad.disconnect()
    other = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await other.connect(base, namespaces=["/nope"], transports=["websocket"], wait_timeout=5)
    await other.disconnect()
    c = await open_client(base)
    await settle()
    assert (
        sample(registry, "socketio_connects_total", {"namespace": "/", "outcome": "rejected"}) == 1
    )
    assert (
        sample(
            registry, "socketio_connects_total", {"namespace": "__other__", "outcome": "rejected"}
        )
        == 1
    )
    assert (
        sample(registry, "socketio_connections", {"namespace": "/", "transport": "websocket"}) == 1
    )
    assert sample(registry, "socketio_queue_depth_max") == 0
    await sio.disconnect(next(iter(sio.manager.rooms["/"][None])))
    await settle()
    assert (
        sample(
            registry,
            "socketio_disconnects_total",
            {"namespace": "/", "reason": "server_disconnect"},
        )
        == 1
    )
    assert (
        sample(registry, "socketio_connections", {"namespace": "/", "transport": "websocket"})
        is None
    )
    await c.disconnect()


async def test_instrumentation_error_never_reaches_the_app(
    live: tuple[socketio.AsyncServer, str], registry: PerfRegistry
) -> None:
    """A failure inside the hook is counted as an instrumentation error; the event still runs."""
    sio, base = live
    got: list[Any] = []
    sio.on("ev", lambda sid, data: got.append(data))
    hook = instrument_socketio(sio, registry=registry)

    def broken(name: str) -> str:
        raise RuntimeError("boom")

    hook._events_in = broken  # type: ignore[assignment]
    hook._events_out = broken  # type: ignore[assignment]
    hook._namespaces = broken  # type: ignore[assignment]
    c = await open_client(base)
    await c.emit("ev", 1)
    await settle()
    await sio.emit("out", 1)
    await c.disconnect()
    await settle()
    assert got == [1]
    errors = sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "socketio"})
    assert errors is not None
    assert errors >= 3


@pytest.mark.parametrize(
    ("target", "kwargs", "message"),
    [
        ("not a server", {}, "AsyncServer"),
        (None, {"events": "connect"}, "events must be"),
        (None, {"events": [1]}, "events must be"),
        (None, {"max_events": 0}, "max_events"),
        (None, {"max_namespaces": False}, "max_namespaces"),
        (None, {"registry": object()}, "registry must be"),
        (None, {"buckets": []}, "buckets"),
    ],
)
def test_instrument_bad_configuration(target: Any, kwargs: dict[str, Any], message: str) -> None:
    """Bad hook options (and a sync server or non-server) are ValueErrors."""
    sio = target if target is not None else socketio.AsyncServer(async_mode="asgi")
    with pytest.raises(ValueError, match=message):
        instrument_socketio(sio, **kwargs)
    assert not hasattr(socketio.Server(), "_asgi_perf_hook")
    with pytest.raises(ValueError, match="AsyncServer"):
        instrument_socketio(socketio.Server())


def test_allow_list_and_default_registry() -> None:
    """With events= only those names are labelled; a registry is created when none is given;
    another hook with other buckets on the same registry is refused."""
    sio = socketio.AsyncServer(async_mode="asgi")
    hook = instrument_socketio(sio, events=["a"])
    assert hook._events_in("a") == "a"
    assert hook._events_in("b") == "__other__"
    with pytest.raises(ValueError, match="other buckets"):
        instrument_socketio(
            socketio.AsyncServer(async_mode="asgi"), registry=hook.registry, buckets=[1.0]
        )
    assert Batcher(sio).registry is not hook.registry


@pytest.mark.parametrize(
    ("packet", "namespace"),
    [
        ('2["a",1]', "/"),
        ('2/chat,["a",1]', "/chat"),
        ("2/chat", "/chat"),
        ('51-/chat,["a",{"_placeholder":true,"num":0}]', "/chat"),
        ('51-["a",{"_placeholder":true,"num":0}]', "/"),
        ("5", "/"),
        ("", "/"),
    ],
)
def test_packet_namespace(packet: str, namespace: str) -> None:
    """The namespace is read from the encoded packet without decoding it."""
    assert sio_mod._packet_namespace(packet) == namespace


def test_wire_size_and_stable_items() -> None:
    """Sizes are UTF-8 bytes; a mapping that keeps changing is still read."""
    assert sio_mod._wire_size("abc") == 3
    assert sio_mod._wire_size("é") == 2
    assert sio_mod._wire_size(b"ab") == 2
    assert sio_mod._wire_size(None) == 0

    class Flaky(dict[str, int]):
        def items(self) -> Any:
            raise RuntimeError("dictionary changed size during iteration")

    assert sio_mod._stable_items(Flaky(a=1)) == [("a", 1)]


def test_unbatch_sync_client_and_bad_client() -> None:
    """The helper works on the sync Client (handlers called per payload) and refuses others."""
    c = socketio.Client()
    got: list[Any] = []
    c.on("e", got.append)
    unbatch(c)
    c.handlers["/"]["asgi-perf:batch"]("e", [1, 2])
    assert got == [1, 2]
    with pytest.raises(ValueError, match=re.escape(ERR_NOT_CLIENT.split("{")[0])):
        unbatch(object())


def test_series_cap_folds_into_overflow() -> None:
    """Past the registry's series cap new label sets share the __overflow__ series, counted."""
    from asgi_perf.socketio._stats import socketio_stats

    registry = PerfRegistry(max_series_per_metric=1)
    stats = socketio_stats(registry)
    for name in ("a", "b", "c"):
        stats.inc("socketio_events_received_total", ("/", name))
        stats.observe_handler(("/", name), 0.01)
    assert sample(registry, "socketio_events_received_total", {"namespace": "/", "event": "a"}) == 1
    overflow = {"namespace": "__overflow__", "event": "__overflow__"}
    assert sample(registry, "socketio_events_received_total", overflow) == 2
    assert sample(registry, "socketio_handler_duration_seconds", overflow, suffix="_count") == 2
    assert (
        sample(
            registry,
            "asgi_perf_series_overflow_total",
            {"metric": "socketio_events_received_total"},
        )
        == 2
    )


async def test_raw_packets_cannot_claim_namespace_labels(
    live: tuple[socketio.AsyncServer, str], registry: PerfRegistry
) -> None:
    """Packets naming namespaces the socket never joined (any string, any length) are labelled
    __other__; they cannot take the limited label slots, so a served namespace keeps its label."""
    import websockets

    sio, base = live
    received: list[Any] = []

    async def on_msg(sid: str, data: Any) -> None:
        received.append(data)

    sio.on("msg", on_msg, namespace="/chat")
    instrument_socketio(sio, registry=registry, max_namespaces=3)
    url = base.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(url) as raw:
        assert str(await raw.recv()).startswith("0")  # engine.io open packet
        for i in range(25):
            await raw.send(f'42/junk-{i},["hello"]')
        await raw.send(f'42/{"X" * 5000},["hello"]')
        c = await open_client(base, namespaces=["/chat"])
        await c.emit("msg", "hi", namespace="/chat")
        for _ in range(200):
            if received:
                break
            await asyncio.sleep(0.01)
        await c.disconnect()
    await settle()
    assert received == ["hi"]
    namespaces = {
        labels["namespace"]
        for name in (
            "socketio_received_bytes_total",
            "socketio_sent_bytes_total",
            "socketio_events_received_total",
            "socketio_connects_total",
        )
        for labels in samples(registry, name)
    }
    assert namespaces <= {"/", "/chat", "__other__"}
    assert (
        sample(registry, "socketio_events_received_total", {"namespace": "/chat", "event": "msg"})
        == 1
    )
    assert (sample(registry, "socketio_received_bytes_total", {"namespace": "__other__"}) or 0) > 0


def connected(registry: PerfRegistry, transport: str = "websocket") -> float | None:
    return sample(registry, "socketio_connections", {"namespace": "/", "transport": transport})


@pytest.mark.parametrize("always_connect", [False, True])
async def test_gauge_counts_a_client_once_its_connect_handler_accepts(
    registry: PerfRegistry, always_connect: bool
) -> None:
    """On every supported python-socketio (5.11-5.17 put a client in the rooms before its
    connect handler runs, 5.18+ marks it pending): while the handler decides, the client is not in
    socketio_connections — unless always_connect told it it is connected; once accepted it is
    counted exactly once, and a refused client never is."""
    sio = socketio.AsyncServer(async_mode="asgi", always_connect=always_connect)
    gates: dict[str, asyncio.Event] = {}
    entered: asyncio.Queue[str] = asyncio.Queue()

    async def connect(sid: str, environ: Any, auth: Any) -> bool:
        gates[auth["name"]] = gate = asyncio.Event()
        entered.put_nowait(auth["name"])
        await gate.wait()
        return bool(auth["name"] != "refused")

    sio.on("connect", connect)
    instrument_socketio(sio, registry=registry)
    during = 1.0 if always_connect else None
    async with serving(sio) as base:
        first = socketio.AsyncClient(reconnection=False)
        joining = asyncio.ensure_future(
            first.connect(base, auth={"name": "first"}, transports=["websocket"], wait_timeout=5)
        )
        assert await entered.get() == "first"
        assert connected(registry) == during
        gates["first"].set()
        await joining
        assert connected(registry) == 1
        refused = socketio.AsyncClient(reconnection=False)
        refusing = asyncio.ensure_future(
            refused.connect(
                base, auth={"name": "refused"}, transports=["websocket"], wait_timeout=5
            )
        )
        assert await entered.get() == "refused"
        assert connected(registry) == (2 if always_connect else 1)
        gates["refused"].set()
        if always_connect:  # told it was connected, then disconnected by the server
            await refusing
        else:
            with pytest.raises(socketio.exceptions.ConnectionError):
                await refusing
        await refused.disconnect()
        await settle()
        assert connected(registry) == 1
        for outcome in ("accepted", "rejected"):
            labels = {"namespace": "/", "outcome": outcome}
            assert sample(registry, "socketio_connects_total", labels) == 1
        await first.disconnect()
        await settle()
        assert connected(registry) is None


async def test_unreadable_manager_exports_no_gauge_and_warns_once(
    live: tuple[socketio.AsyncServer, str],
    registry: PerfRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A python-socketio whose manager keeps its clients elsewhere (a release this hook does not
    know, or a custom manager): socketio_connections has no sample at all rather than a wrong
    one, one warning says so however often /metrics is scraped, and every other figure stays."""
    sio, base = live
    instrument_socketio(sio, registry=registry)
    c = await open_client(base)
    await settle()
    assert connected(registry) == 1
    # The fault cannot be caused with a real release: take away what such a manager lacks.
    monkeypatch.delattr(sio.manager, "pending_disconnect")
    with caplog.at_level(logging.WARNING, logger="asgi_perf.socketio"):
        for _ in range(3):
            assert samples(registry, "socketio_connections") == []
            assert sample(registry, "socketio_queue_depth_max") == 0
    warnings = [r for r in caplog.records if r.name == "asgi_perf.socketio"]
    assert len(warnings) == 1
    assert "socketio_connections is not exported" in warnings[0].getMessage()
    errors = sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "socketio"})
    assert not errors  # a known gap, not a failure
    accepted = {"namespace": "/", "outcome": "accepted"}
    assert sample(registry, "socketio_connects_total", accepted) == 1
    monkeypatch.undo()
    await c.disconnect()


async def test_unreadable_queues_export_no_depth(
    live: tuple[socketio.AsyncServer, str],
    registry: PerfRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An engine.io socket whose outgoing queue has no qsize(): the queue-depth gauges have no
    sample (a 0 would claim an empty queue), one warning; the connection gauge is unaffected."""
    sio, base = live
    instrument_socketio(sio, registry=registry)
    c = await open_client(base)
    await settle()
    (socket,) = sio.eio.sockets.values()
    monkeypatch.setattr(socket, "queue", object())
    with caplog.at_level(logging.WARNING, logger="asgi_perf.socketio"):
        for _ in range(2):
            assert samples(registry, "socketio_queue_depth_max") == []
            assert samples(registry, "socketio_queued_packets") == []
            assert connected(registry) == 1
    assert len([r for r in caplog.records if r.name == "asgi_perf.socketio"]) == 1
    monkeypatch.undo()
    await c.disconnect()


async def test_a_failing_server_leaves_the_figure_out_not_partial(
    live: tuple[socketio.AsyncServer, str], registry: PerfRegistry
) -> None:
    """Two servers on one registry, one of which fails while being read: socketio_connections
    has no sample (the other server's count alone would be a wrong total) and the failure is
    counted as an instrumentation error; the next good scrape has both again."""
    from asgi_perf.socketio._stats import socketio_stats

    sio, base = live
    instrument_socketio(sio, registry=registry)
    c = await open_client(base)
    await settle()

    class Failing:
        broken = True

        def connections(self) -> list[tuple[str, str, int]]:
            if self.broken:
                raise RuntimeError("boom")
            return [("/", "websocket", 2)]

        def queue_depths(self) -> list[int]:
            return [3]

    other = Failing()
    socketio_stats(registry).servers.add(other)
    assert samples(registry, "socketio_connections") == []
    assert sample(registry, "socketio_queue_depth_max") == 3
    errors = sample(registry, "asgi_perf_instrumentation_errors_total", {"component": "socketio"})
    assert errors is not None
    assert errors >= 1
    other.broken = False
    assert connected(registry) == 3
    await c.disconnect()


async def test_rejected_namespaces_do_not_take_catch_all_labels(registry: PerfRegistry) -> None:
    """With a ``namespace="*"`` catch-all handler, a namespace the server rejects (its connect
    handler returns False or raises ConnectionRefusedError) takes no namespace label: after 20
    rejected connects to random namespaces, an accepted ``/chat`` is still reported as ``/chat``."""
    sio = socketio.AsyncServer(async_mode="asgi", namespaces="*")
    rejected: list[str] = []

    async def on_connect(namespace: str, sid: str, environ: Any, auth: Any = None) -> bool:
        if namespace.startswith("/probe-"):
            rejected.append(namespace)
            if len(rejected) % 2:
                raise socketio.exceptions.ConnectionRefusedError("no")
            return False
        return True

    sio.on("connect", on_connect, namespace="*")
    instrument_socketio(sio, registry=registry, max_namespaces=5)
    async with serving(sio) as base:
        for i in range(20):
            c = socketio.AsyncClient(reconnection=False)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await c.connect(base, namespaces=[f"/probe-{i}"], transports=["websocket"])
            await c.disconnect()
        c = await open_client(base, namespaces=["/chat"])
        await c.emit("hello", "hi", namespace="/chat")
        await settle()
        await c.disconnect()
        await settle()
    assert len(rejected) == 20
    connects = {
        (labels["namespace"], labels["outcome"]): sample(
            registry, "socketio_connects_total", labels
        )
        for labels in samples(registry, "socketio_connects_total")
    }
    assert connects[("/chat", "accepted")] == 1
    assert connects[("__other__", "rejected")] == 20
    assert {ns for ns, _ in connects} == {"/chat", "__other__"}
    assert (
        sample(registry, "socketio_events_received_total", {"namespace": "/chat", "event": "hello"})
        == 1
    )

"""The python-socketio hook: exact connection and event metrics for one AsyncServer.

``instrument_socketio(sio, registry=...)`` hooks one ``socketio.AsyncServer`` *instance*: it wraps a
few of that instance's attributes (never a class, never engine.io process-wide) and leaves the
application's own handlers alone, so they run exactly as before. The batcher is in ``_batcher``.

Why these hook points (python-socketio 5.11+):

* ``_handle_connect``: the only place that sees *every* connection attempt, including the ones a
  ``connect`` handler rejects (they get ``pre_connect`` and a disconnect but never ``connect``,
  which is why counting in the app's own handlers drifts negative).
* ``_handle_disconnect`` and ``disconnect``: the client/transport side and the server side of a
  disconnect; counted only when the client was connected, so nothing is counted twice.
* ``_handle_event_internal``: runs once per event from a connected client, around the handler.
* engine.io's ``message`` handler and ``send_packet``: every Socket.IO packet in and out, already
  encoded, so bytes are measured without serialising anything again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from time import perf_counter
from typing import Any, cast

from .._checks import ERR_REGISTRY, check, is_int_at_least
from .._histogram import check_buckets
from .._labels import OTHER, NameLimiter
from ..catalogue import LATENCY_BUCKETS
from ..registry import PerfRegistry
from ._stats import SocketIOStats, socketio_stats

#: Pass to ``PerfMiddleware(exclude_patterns=[SOCKETIO_PATH_PATTERN])`` so Socket.IO long-polling
#: requests (held open up to the ping interval) stay out of the HTTP latency histograms.
SOCKETIO_PATH_PATTERN = r"^/socket\.io/"

ERR_NOT_ASYNC_SERVER = "expected a socketio.AsyncServer instance, got {!r}"
ERR_OTHER_REGISTRY = (
    "this server is already instrumented into another registry; call uninstall() on that hook first"
)
ERR_MAX_NAMES = "{} must be an int >= 1, got {!r}"
ERR_EVENTS = "events must be an iterable of event-name strings, got {!r}"

#: engine.io's disconnect reasons -> label values (anything else is ``unknown``).
DISCONNECT_REASONS: dict[object, str] = {
    "server disconnect": "server_disconnect",
    "client disconnect": "client_disconnect",
    "ping timeout": "ping_timeout",
    "transport close": "transport_close",
    "transport error": "transport_error",
}
UNKNOWN_REASON = "unknown"
_MESSAGE = 4  # engine.io MESSAGE packet type: the ones carrying Socket.IO packets
_HOOK_ATTR = "_asgi_perf_hook"
_NO_REASON: Any = object()

logger = logging.getLogger("asgi_perf.socketio")

#: Logged once per server when its python-socketio keeps a figure where the hook cannot read it.
CANNOT_READ = (
    "asgi-perf cannot read %s from this python-socketio %s (%s); %s is not exported for this "
    "server rather than exported wrong"
)


class _Unreadable(Exception):
    """The server's internals are not shaped as the scrape-time readers expect."""


def _check_max(name: str, value: object) -> int:
    check(is_int_at_least(value, 1), ERR_MAX_NAMES, name, value)
    return cast("int", value)


def _wire_size(data: object) -> int:
    if isinstance(data, str):
        # isascii() is O(1) on CPython: the common case costs no copy.
        return len(data) if data.isascii() else len(data.encode("utf-8"))
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    return 0


#: Socket.IO packet types only a connected client receives: EVENT, ACK, BINARY_EVENT, BINARY_ACK.
_CLAIMING_PACKETS = frozenset("2356")


def _packet_namespace(data: str) -> str:
    """The namespace of an encoded Socket.IO packet (``2/chat,[...]``), ``/`` when absent."""
    start = 1
    if data[:1] in ("5", "6"):  # binary event/ack: "51-/chat,[...]"
        start = data.find("-") + 1
        if start == 0:
            return "/"
    if data[start : start + 1] != "/":
        return "/"
    end = data.find(",", start)
    return data[start:end] if end != -1 else data[start:]


class SocketIOHook:
    """The instrumentation of one server; returned by :func:`instrument_socketio`."""

    def __init__(
        self,
        sio: Any,
        registry: PerfRegistry,
        stats: SocketIOStats,
        events: Iterable[str] | None,
        max_events: int,
        max_namespaces: int,
    ) -> None:
        self.server = sio
        self.registry = registry
        self._stats = stats
        allow = list(events) if events is not None else None
        # Clients choose event names, the server chooses what it emits: separate limits, so a
        # client flooding random names cannot push the server's own events into __other__.
        self._events_in = NameLimiter(allow=allow, max_names=max_events)
        self._events_out = NameLimiter(allow=allow, max_names=max_events)
        self._namespaces = NameLimiter(max_names=max_namespaces)
        self._served_labels: dict[str, str] = {}
        self._saved: list[tuple[Any, str, bool, Any, Any]] = []
        # (namespace, eio sid) -> connect handlers running. Before python-socketio 5.18 a client
        # is in the manager's rooms while its connect handler decides; it is not connected yet.
        self._connecting: dict[tuple[str, str], int] = {}
        self._unreadable: set[str] = set()
        self.installed = False

    # -- labels ----------------------------------------------------------------------------------
    def _namespace_label(self, namespace: Any, *, accepted: bool = True) -> str:
        """The label for a namespace the server serves; ``__other__`` for anything else.

        Every namespace label goes through here: namespaces come from client packets, and only
        served ones may take one of the limited label slots (first come would let any client
        push the real namespaces into ``__other__``). A namespace served only through a
        catch-all (``namespaces="*"`` or a ``namespace="*"`` handler) takes a slot once the
        server has accepted a connection to it: ``accepted=False`` (a refused connect) never
        claims one, so refused random namespaces cannot push the real ones into ``__other__``.
        """
        label = self._served_labels.get(namespace)
        if label is not None:
            return label
        if not isinstance(namespace, str):
            return OTHER
        sio = self.server
        named = (
            namespace in sio.handlers
            or namespace in sio.namespace_handlers
            or (sio.namespaces != "*" and namespace in sio.namespaces)
        )
        catch_all = sio.namespaces == "*" or "*" in sio.handlers or "*" in sio.namespace_handlers
        # A client can ask for any namespace; one the server does not serve never gets a series.
        if not named and not (catch_all and accepted):
            return OTHER
        label = self._namespaces(namespace)
        if label != OTHER:
            self._served_labels[namespace] = label  # bounded by max_namespaces
        return label

    # -- install / uninstall ---------------------------------------------------------------------
    def _replace(self, owner: Any, name: str, wrapper: Any) -> None:
        if isinstance(owner, dict):
            self._saved.append((owner, name, True, owner.get(name), wrapper))
            owner[name] = wrapper
            return
        own = vars(owner)
        self._saved.append((owner, name, name in own, own.get(name), wrapper))
        setattr(owner, name, wrapper)

    def install(self) -> None:
        sio = self.server
        eio = sio.eio
        self._replace(sio, "_handle_connect", self._wrap_connect(sio._handle_connect))
        self._replace(
            sio, "_handle_disconnect", self._wrap_handle_disconnect(sio._handle_disconnect)
        )
        self._replace(sio, "disconnect", self._wrap_disconnect(sio.disconnect))
        self._replace(sio, "_handle_event_internal", self._wrap_event(sio._handle_event_internal))
        self._replace(sio, "emit", self._wrap_emit(sio.emit))
        self._replace(eio.handlers, "message", self._wrap_message(eio.handlers["message"]))
        self._replace(eio, "send_packet", self._wrap_send_packet(eio.send_packet))
        setattr(sio, _HOOK_ATTR, self)
        self._stats.servers.add(self)
        self.installed = True

    def uninstall(self) -> None:
        """Restore every wrapped attribute and stop reporting this server. Idempotent."""
        if not self.installed:
            return
        for owner, name, had_own, original, wrapper in reversed(self._saved):
            current = owner.get(name) if isinstance(owner, dict) else vars(owner).get(name)
            if current is not wrapper:
                # Someone wrapped on top of us: removing ours would drop theirs. Our wrapper
                # stays in their chain but turns into a pass-through (installed is False).
                continue
            if isinstance(owner, dict) or had_own:
                if isinstance(owner, dict):
                    owner[name] = original
                else:
                    setattr(owner, name, original)
            else:
                delattr(owner, name)
        self._saved.clear()
        self._stats.servers.discard(self)
        if getattr(self.server, _HOOK_ATTR, None) is self:
            delattr(self.server, _HOOK_ATTR)
        self.installed = False

    # -- wrappers --------------------------------------------------------------------------------
    def _wrap_connect(self, original: Callable[..., Awaitable[Any]]) -> Any:
        hook = self
        manager_of = self._manager

        async def _handle_connect(eio_sid: str, namespace: str | None, data: Any) -> Any:
            if not hook.installed:
                return await original(eio_sid, namespace, data)
            ns = namespace or "/"
            manager = manager_of()
            before = manager.sid_from_eio_sid(eio_sid, ns)
            # With always_connect the client is told it is connected before the handler runs.
            pending = None if getattr(hook.server, "always_connect", False) else (ns, eio_sid)
            connecting = hook._connecting
            if pending is not None:
                connecting[pending] = connecting.get(pending, 0) + 1
            try:
                return await original(eio_sid, namespace, data)
            finally:
                if pending is not None:
                    left = connecting.pop(pending) - 1
                    if left:
                        connecting[pending] = left
                try:
                    after = manager.sid_from_eio_sid(eio_sid, ns)
                    accepted = (
                        after is not None and after != before and manager.is_connected(after, ns)
                    )
                    hook._stats.inc(
                        "socketio_connects_total",
                        (
                            hook._namespace_label(ns, accepted=accepted),
                            "accepted" if accepted else "rejected",
                        ),
                    )
                except Exception as exc:  # noqa: BLE001
                    hook.registry.report_error("socketio", exc)

        return _handle_connect

    def _count_disconnect(self, ns: str, reason: object) -> None:
        try:
            label = DISCONNECT_REASONS.get(reason, UNKNOWN_REASON)
            self._stats.inc("socketio_disconnects_total", (self._namespace_label(ns), label))
        except Exception as exc:  # noqa: BLE001
            self.registry.report_error("socketio", exc)

    def _wrap_handle_disconnect(self, original: Callable[..., Awaitable[Any]]) -> Any:
        hook = self
        manager_of = self._manager

        async def _handle_disconnect(
            eio_sid: str, namespace: str | None, reason: Any = _NO_REASON
        ) -> Any:
            # python-socketio 5.12+ passes engine.io's reason; 5.11 takes none (and knows none):
            # call the original the way python-socketio called us.
            call = (eio_sid, namespace) if reason is _NO_REASON else (eio_sid, namespace, reason)
            if not hook.installed:
                return await original(*call)
            ns = namespace or "/"
            manager = manager_of()
            sid = manager.sid_from_eio_sid(eio_sid, ns)
            was_connected = sid is not None and manager.is_connected(sid, ns)
            try:
                return await original(*call)
            finally:
                if was_connected:
                    hook._count_disconnect(ns, reason)

        return _handle_disconnect

    def _wrap_disconnect(self, original: Callable[..., Awaitable[Any]]) -> Any:
        hook = self
        manager_of = self._manager

        async def disconnect(sid: str, namespace: str | None = None, **kwargs: Any) -> Any:
            if not hook.installed:
                return await original(sid, namespace, **kwargs)
            ns = namespace or "/"
            manager = manager_of()
            # Local clients only: with a pub/sub manager a remote client's disconnect is
            # counted by the node it is connected to, when that node runs this same method.
            was_connected = manager.is_connected(sid, ns)
            try:
                return await original(sid, namespace, **kwargs)
            finally:
                if was_connected and not manager.is_connected(sid, ns):
                    hook._count_disconnect(ns, "server disconnect")

        return disconnect

    def _wrap_event(self, original: Callable[..., Awaitable[Any]]) -> Any:
        hook = self
        stats = self._stats

        async def _handle_event_internal(
            server: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: Any
        ) -> Any:
            if not hook.installed:
                return await original(server, sid, eio_sid, data, namespace, id)
            start = perf_counter()
            try:
                return await original(server, sid, eio_sid, data, namespace, id)
            finally:
                elapsed = perf_counter() - start
                try:
                    name = data[0]
                    key = (
                        hook._namespace_label(namespace),
                        hook._events_in(name) if type(name) is str else OTHER,
                    )
                    stats.inc("socketio_events_received_total", key)
                    stats.observe_handler(key, elapsed)
                except Exception as exc:  # noqa: BLE001
                    hook.registry.report_error("socketio", exc)

        return _handle_event_internal

    def _wrap_emit(self, original: Callable[..., Awaitable[Any]]) -> Any:
        hook = self
        stats = self._stats

        async def emit(event: str, *args: Any, **kwargs: Any) -> Any:
            if hook.installed:
                try:
                    ns = args[4] if len(args) > 4 else kwargs.get("namespace")
                    stats.inc(
                        "socketio_events_emitted_total",
                        (
                            hook._namespace_label(ns or "/"),
                            hook._events_out(event) if type(event) is str else OTHER,
                        ),
                    )
                except Exception as exc:  # noqa: BLE001
                    hook.registry.report_error("socketio", exc)
            return await original(event, *args, **kwargs)

        return emit

    def _wrap_message(self, original: Callable[..., Awaitable[Any]]) -> Any:
        hook = self
        stats = self._stats
        binary = self.server._binary_packet
        manager = self.server.manager

        async def on_message(eio_sid: str, data: Any) -> Any:
            if hook.installed:
                try:
                    if isinstance(data, str):
                        ns = _packet_namespace(data)
                    else:
                        # An attachment belongs to the binary packet this socket is assembling;
                        # a whole binary packet (msgpack serializer) is not parsed again.
                        pkt = binary.get(eio_sid)
                        ns = pkt.namespace or "/" if pkt is not None else OTHER
                    # Only a namespace this socket is connected to names the bytes: a raw packet
                    # can carry any namespace string.
                    connected = ns != OTHER and manager.sid_from_eio_sid(eio_sid, ns) is not None
                    label = hook._namespace_label(ns) if connected else OTHER
                    stats.inc("socketio_received_bytes_total", (label,), _wire_size(data))
                except Exception as exc:  # noqa: BLE001
                    hook.registry.report_error("socketio", exc)
            return await original(eio_sid, data)

        return on_message

    def _wrap_send_packet(self, original: Callable[..., Awaitable[Any]]) -> Any:
        hook = self
        stats = self._stats
        # A broadcast sends the same packet object to every recipient: parse it once.
        last: list[Any] = [None, ("/",), 0]

        async def send_packet(sid: str, pkt: Any) -> Any:
            if hook.installed and pkt.packet_type == _MESSAGE:
                try:
                    if pkt is not last[0]:
                        data = pkt.data
                        if isinstance(data, str):
                            # Connect answers go out before the server's decision is known: only
                            # events and acks (sent to connected clients) may claim a label.
                            ns = _packet_namespace(data)
                            claim = data[:1] in _CLAIMING_PACKETS
                            last[1] = (hook._namespace_label(ns, accepted=claim),)
                        # bytes: an attachment, counted under the packet that announced it
                        last[0], last[2] = pkt, _wire_size(data)
                    stats.inc("socketio_sent_bytes_total", last[1], last[2])
                except Exception as exc:  # noqa: BLE001
                    hook.registry.report_error("socketio", exc)
            return await original(sid, pkt)

        return send_packet

    def _manager(self) -> Any:
        return self.server.manager

    # -- scrape time (ServerState) ---------------------------------------------------------------
    def _cannot_read(self, what: str, figure: str, exc: BaseException) -> None:
        if figure not in self._unreadable:
            self._unreadable.add(figure)
            logger.warning(CANNOT_READ, what, _socketio_version(), exc, figure)

    def connections(self) -> list[tuple[str, str, int]] | None:
        """``(namespace label, transport, count)`` of the connected clients; ``None`` (after one
        warning) when this python-socketio keeps them where the hook cannot read them."""
        try:
            return self._read_connections()
        except _Unreadable as exc:
            self._cannot_read("the connected clients", "socketio_connections", exc)
            return None

    def _read_connections(self) -> list[tuple[str, str, int]]:
        manager = self.server.manager
        rooms = _mapping(manager, "rooms")
        # 5.18+ keeps a client whose connect handler is running in pending_connect; before, it
        # is already in rooms and only self._connecting knows it is not connected yet.
        pending_connect = _mapping(manager, "pending_connect", missing_ok=True)
        pending_disconnect = _mapping(manager, "pending_disconnect")
        sockets = _mapping(self.server.eio, "sockets")
        connecting = self._connecting
        found: list[tuple[str, str, int]] = []
        for namespace, ns_rooms in _stable_items(rooms):
            if not isinstance(ns_rooms, dict):
                raise _Unreadable(f"manager.rooms[{namespace!r}] is a {type(ns_rooms).__name__}")
            members = ns_rooms.get(None)
            if not members:
                continue
            busy = set(pending_connect.get(namespace, ()))
            busy.update(pending_disconnect.get(namespace, ()))
            counts: dict[str, int] = {}
            for sid, eio_sid in _stable_items(members):
                if sid in busy or (namespace, eio_sid) in connecting:
                    continue
                socket = sockets.get(eio_sid)
                transport = (
                    UNKNOWN_REASON
                    if socket is None
                    else "websocket"
                    if socket.upgraded
                    else "polling"
                )
                counts[transport] = counts.get(transport, 0) + 1
            label = self._namespace_label(namespace)
            found.extend((label, transport, n) for transport, n in counts.items())
        return found

    def queue_depths(self) -> list[int] | None:
        """The outgoing queue length of every engine.io socket; ``None`` (after one warning) when
        this engine.io keeps them where the hook cannot read them."""
        try:
            sockets = _mapping(self.server.eio, "sockets")
            return [_queue_size(s) for _, s in _stable_items(sockets)]
        except _Unreadable as exc:
            self._cannot_read("the outgoing queues", "socketio_queue_depth_max/sum", exc)
            return None


def _mapping(owner: Any, name: str, *, missing_ok: bool = False) -> dict[Any, Any]:
    value = getattr(owner, name, None)
    if value is None and missing_ok and not hasattr(owner, name):
        return {}
    if not isinstance(value, dict):
        what = "missing" if not hasattr(owner, name) else f"a {type(value).__name__}"
        raise _Unreadable(f"{type(owner).__name__}.{name} is {what}")
    return value


def _queue_size(socket: Any) -> int:
    qsize = getattr(getattr(socket, "queue", None), "qsize", None)
    if not callable(qsize):
        raise _Unreadable(f"{type(socket).__name__}.queue has no qsize()")
    size = qsize()
    if not isinstance(size, int):
        raise _Unreadable(f"{type(socket).__name__}.queue.qsize() is a {type(size).__name__}")
    return size


def _socketio_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("python-socketio")
    except PackageNotFoundError:  # pragma: no cover - the hook needs python-socketio installed
        return "(version unknown)"


def _stable_items(mapping: Any) -> list[tuple[Any, Any]]:
    """``list(mapping.items())``, retried if the event loop changed it meanwhile (scrape thread)."""
    for _ in range(3):
        try:
            return list(mapping.items())
        except RuntimeError:  # dictionary changed size during iteration
            continue
    return list(mapping.copy().items())


def instrument_socketio(
    sio: Any,
    *,
    registry: PerfRegistry | None = None,
    events: Iterable[str] | None = None,
    max_events: int = 100,
    max_namespaces: int = 20,
    buckets: Sequence[float] = LATENCY_BUCKETS,
) -> SocketIOHook:
    """Report ``sio`` (a ``socketio.AsyncServer``) into ``registry``.

    :param events: allow-list of event names to label; anything else is ``__other__``. Without it,
        the first ``max_events`` distinct names received (and, separately, emitted) are labelled.
    :param max_namespaces: distinct namespace labels before ``__other__``.
    :param buckets: handler duration bounds (seconds), one layout per registry.
    :returns: the hook; ``hook.uninstall()`` restores the server. Calling again with the same
        registry returns the same hook (idempotent); another registry is a ``ValueError``.
    """
    if registry is None:
        registry = PerfRegistry()
    check(isinstance(registry, PerfRegistry), ERR_REGISTRY, registry)
    is_async = getattr(sio, "is_asyncio_based", None)
    if not (callable(is_async) and is_async() and hasattr(sio, "_handle_connect")):
        raise ValueError(ERR_NOT_ASYNC_SERVER.format(sio))
    if events is not None:
        if isinstance(events, str):
            raise ValueError(ERR_EVENTS.format(events))
        events = list(events)
        if not all(isinstance(e, str) for e in events):
            raise ValueError(ERR_EVENTS.format(events))
    max_events = _check_max("max_events", max_events)
    max_namespaces = _check_max("max_namespaces", max_namespaces)
    bounds = check_buckets(buckets)
    existing = getattr(sio, _HOOK_ATTR, None)
    if isinstance(existing, SocketIOHook) and existing.installed:
        if existing.registry is not registry:
            raise ValueError(ERR_OTHER_REGISTRY)
        return existing
    stats = socketio_stats(registry)
    stats.claim_buckets(bounds)
    hook = SocketIOHook(sio, registry, stats, events, max_events, max_namespaces)
    hook.install()
    return hook


__all__ = [
    "DISCONNECT_REASONS",
    "SOCKETIO_PATH_PATTERN",
    "SocketIOHook",
    "instrument_socketio",
]

"""python-socketio: exact connection and event metrics, and an ordered, lossless batcher.

``instrument_socketio(sio, registry=...)`` hooks one ``socketio.AsyncServer`` instance;
``Batcher(sio, ...)`` coalesces small emits per target into one event each; :func:`unbatch` (and
``JS_UNBATCH`` for browsers) unpacks them on the client (see ``docs/socketio.md``). Requires the
``socketio`` extra.
"""

from .. import _optional

# The hook works on a server instance and never calls the package itself; importing it here
# makes a missing install fail now, naming the extra, not at the first instrument_socketio().
with _optional.requires("asgi_perf.socketio", extra="socketio"):
    import socketio  # noqa: F401

from ._batcher import Batcher
from ._client import (
    BATCH_EVENT,
    JS_UNBATCH,
    unbatch,
)
from ._hook import (
    DISCONNECT_REASONS,
    SOCKETIO_PATH_PATTERN,
    SocketIOHook,
    instrument_socketio,
)

__all__ = [
    "BATCH_EVENT",
    "DISCONNECT_REASONS",
    "JS_UNBATCH",
    "SOCKETIO_PATH_PATTERN",
    "Batcher",
    "SocketIOHook",
    "instrument_socketio",
    "unbatch",
]

"""Client side of the batch wire format: unpack batches on a python-socketio client.

A batch sent by :class:`asgi_perf.socketio.Batcher` is one Socket.IO event named
:data:`BATCH_EVENT` (``"asgi-perf:batch"``) with two arguments: the original event name and the
list of payloads, in emit order::

    42["asgi-perf:batch","cursor",[{"x":1},{"x":2}]]

:func:`unbatch` registers a handler for it that calls the client's own handler for the original
event once per payload, in order — so application code keeps ``@client.on("cursor")`` unchanged.
This module imports nothing from python-socketio and works with ``socketio.AsyncClient`` and
``socketio.Client``.
"""

from __future__ import annotations

import inspect
from typing import Any

#: Name of the envelope event that carries a batch.
BATCH_EVENT = "asgi-perf:batch"

ERR_NOT_CLIENT = "unbatch() needs a socketio.AsyncClient or socketio.Client, got {!r}"


def unbatch(client: Any, *, namespace: str = "/", batch_event: str = BATCH_EVENT) -> None:
    """Make ``client`` deliver every batched payload to its handler for the original event.

    Handlers, catch-all handlers (``"*"``) and class-based namespaces receive each payload exactly
    as if it had been emitted alone. Call once per namespace that receives batches.
    """
    trigger = getattr(client, "_trigger_event", None)
    if trigger is None or not callable(getattr(client, "on", None)):
        raise ValueError(ERR_NOT_CLIENT.format(client))
    if inspect.iscoroutinefunction(trigger):

        async def on_batch_async(event: str, items: list[Any]) -> None:
            for item in items:
                await trigger(event, namespace, item)

        client.on(batch_event, on_batch_async, namespace=namespace)
    else:

        def on_batch(event: str, items: list[Any]) -> None:
            for item in items:
                trigger(event, namespace, item)

        client.on(batch_event, on_batch, namespace=namespace)


#: The same for the JavaScript ``socket.io-client`` (also in the docs).
JS_UNBATCH = """\
// Deliver asgi-perf batches to the socket's own listeners, one payload at a time, in order.
function unbatch(socket, batchEvent = "asgi-perf:batch") {
  socket.on(batchEvent, (event, items) => {
    for (const item of items) {
      for (const listener of socket.listeners(event)) listener(item);
    }
  });
}
"""

__all__ = ["BATCH_EVENT", "JS_UNBATCH", "unbatch"]

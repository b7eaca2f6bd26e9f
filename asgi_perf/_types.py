"""ASGI type aliases, in one place (the shapes follow the ASGI spec and ``starlette.types``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Scope key the metrics app sets on the requests it serves (``/metrics`` and the operations
#: endpoints), so the HTTP middleware around it can leave the package's own traffic out.
OWN_ENDPOINT_KEY = "asgi_perf.own_endpoint"

__all__ = ["OWN_ENDPOINT_KEY", "ASGIApp", "Message", "Receive", "Scope", "Send"]

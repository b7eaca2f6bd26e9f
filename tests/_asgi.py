"""Hand-built ASGI plumbing for tests: scopes, scripted receive, recording send."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asgi_perf._types import Message


def http_scope(
    path: str = "/",
    method: str = "GET",
    headers: Sequence[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": b"",
        "root_path": "",
        "headers": list(headers),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    scope.update(extra)
    return scope


class Receiver:
    """``receive`` that plays a script of messages, then blocks-free returns ``http.disconnect``."""

    def __init__(self, *messages: Message) -> None:
        self.messages = list(messages) or [
            {"type": "http.request", "body": b"", "more_body": False}
        ]

    async def __call__(self) -> Message:
        if self.messages:
            return self.messages.pop(0)
        return {"type": "http.disconnect"}


class Sender:
    """``send`` that records every message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        for m in self.messages:
            if m["type"] == "http.response.start":
                return int(m["status"])
        return None

    @property
    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )

"""``uvicorn APP --workers N``, but with TCP_NODELAY on every connection.

Usage: python benchmarks/_uvicorn_workers.py MODULE:APP PORT WORKERS

uvicorn's supervisor binds the shared socket with ``proto`` 0; accepted sockets inherit it and
asyncio then leaves Nagle's algorithm on, so on Linux every keep-alive request after the first
waits ~40 ms for the client's delayed ACK (uvicorn issue 3149; ``--workers 1`` is unaffected).
The benchmark measures CPU scaling, not that delay: this launcher re-wraps the socket as TCP and
otherwise runs uvicorn's own multi-process supervisor, as ``uvicorn --workers N`` does.
"""

from __future__ import annotations

import socket
import sys

from uvicorn import Config
from uvicorn.supervisors import Multiprocess


def main() -> None:
    app, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    config = Config(
        app, host="127.0.0.1", port=port, workers=workers, log_level="warning", access_log=False
    )
    bound = config.bind_socket()
    sock = socket.socket(bound.family, bound.type, socket.IPPROTO_TCP, fileno=bound.detach())
    Multiprocess(config, sockets=[sock]).run()


if __name__ == "__main__":
    main()

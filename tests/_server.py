"""Run an ASGI app under a real uvicorn process on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

ServerFactory = Callable[..., str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve_app() -> Iterator[ServerFactory]:
    """Yields ``start(app_spec, *uvicorn_args, env=None) -> base_url``; stops every server on exit.

    ``app_spec`` is an import string (``tests.apps.http_app:app``); the server is ready once one
    HTTP request to ``ready_path`` gets any answer.
    """
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        app_spec: str,
        *args: str,
        env: dict[str, str] | None = None,
        ready_path: str = "/",
        timeout: float = 30.0,
    ) -> str:
        port = free_port()
        cmd: Sequence[str] = [
            sys.executable,
            "-m",
            "uvicorn",
            app_spec,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *args,
        ]
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env)
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode} starting {app_spec}")
            try:
                httpx.get(base + ready_path, timeout=1.0)
            except httpx.TransportError:
                time.sleep(0.1)
            else:
                return base
        raise RuntimeError(f"uvicorn did not start {app_spec} within {timeout}s")

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

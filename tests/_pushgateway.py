"""A real Prometheus Pushgateway (Debian ``prometheus-pushgateway``) on 127.0.0.1 for the tests."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ._server import free_port

BINARY = "prometheus-pushgateway"
START_LIMIT = 30.0  # a safety bound on waiting for start-up, never a performance assertion

#: Credentials for the gateway started with ``basic_auth=True``; HASH is bcrypt("s3cret", cost 5),
#: made once offline so the tests need no bcrypt library.
USER = "pusher"
PASSWORD = "s3cret"
HASH = "$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def binary() -> str | None:
    """Path of the Pushgateway binary, if installed."""
    return shutil.which(BINARY)


@dataclass
class Pushgateway:
    """A running Pushgateway: its URL and readers of what it holds."""

    url: str
    auth: tuple[str, str] | None = None

    def get(self, path: str) -> httpx.Response:
        response = httpx.get(self.url + path, auth=self.auth, timeout=10)
        response.raise_for_status()
        return response

    def samples(self, **group: str) -> Samples:
        """``{(sample name, sorted labels): value}`` of the gateway's /metrics for one group.

        A group is selected by its grouping labels (``job="x"``); the gateway's own metrics
        (``pushgateway_*``, ``go_*``, ``process_*``) carry no ``job`` label and are left out.
        """
        out: Samples = {}
        for family in text_string_to_metric_families(self.get("/metrics").text):
            for s in family.samples:
                if "job" in s.labels and all(s.labels.get(k) == v for k, v in group.items()):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def groups(self) -> list[dict[str, Any]]:
        """The gateway's groups (``/api/v1/metrics``): labels and the metric families of each."""
        data: list[dict[str, Any]] = self.get("/api/v1/metrics").json()["data"]
        return data


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    """The value of the one sample ``metric`` whose labels include ``labels``."""
    found = [
        v
        for (n, have), v in samples.items()
        if n == metric and all(dict(have).get(k) == want for k, want in labels.items())
    ]
    assert len(found) <= 1, (metric, labels, found)
    return found[0] if found else None


@contextlib.contextmanager
def run_pushgateway(path: str, tmp: Path, *, basic_auth: bool = False) -> Iterator[Pushgateway]:
    """Start the Pushgateway on a free port, in memory only (no persistence file); stop it after."""
    port = free_port()
    cmd = [
        path,
        f"--web.listen-address=127.0.0.1:{port}",
        "--persistence.file=",  # Debian's default persists to /var/lib: keep every test's data apart
        "--log.level=error",
    ]
    auth = None
    if basic_auth:
        config = tmp / "pushgateway-web.yml"
        config.write_text(f'basic_auth_users:\n  {USER}: "{HASH}"\n')
        cmd.append(f"--web.config.file={config}")
        auth = (USER, PASSWORD)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    gateway = Pushgateway(f"http://127.0.0.1:{port}", auth)
    try:
        deadline = time.monotonic() + START_LIMIT
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"{BINARY} exited with {proc.returncode}: {err}")
            try:
                gateway.get("/-/ready")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{BINARY} did not start within {START_LIMIT}s") from None
                time.sleep(0.05)
        yield gateway
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - it stops on SIGTERM
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

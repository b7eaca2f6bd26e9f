"""A real headless Chromium driven over the DevTools protocol: load a page at a given width, run
script in it, hover, read its console and CSP reports, and take full-page screenshots."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from ._browser import chromium

#: Recorded in the page before any of its own script runs (DevTools-injected script is not
#: subject to the page's CSP), so every violation the page causes is kept.
_RECORD_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


class Page:
    """One browser tab; ``console`` collects errors, warnings and uncaught exceptions."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.console: list[str] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning"):
            args = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            self.console.append(f"console.{params['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description", details.get("text"))
            self.console.append(f"exception: {text}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            entry = params["entry"]
            self.console.append(f"log.{entry['level']}: {entry['text']} {entry.get('url', '')}")

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def resize(self, width: int, height: int) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def open(self, url: str, width: int, height: int = 900) -> None:
        self.resize(width, height)
        self.send("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Polls ``expression`` until it is truthy (a deadline for failure, not a measurement)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None  # the page is still loading (no body yet)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"never true: {expression}; console: {self.console}")
            time.sleep(0.1)

    def hover(self, x: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def screenshot(self, path: Path, width: int) -> None:
        """The whole page at ``width`` CSS pixels, as PNG."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.resize(width, height)
        # Let the charts follow the new viewport before the capture.
        self.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
        shot = self.send(
            "Page.captureScreenshot",
            format="png",
            clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            captureBeyondViewport=True,
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def csp_violations(self) -> list[str]:
        found: list[str] = self.evaluate("window.__cspViolations || []")
        return found


@contextlib.contextmanager
def chromium_page() -> Iterator[Page]:
    """A fresh headless Chromium (its own profile) with one tab ready to drive."""
    binary = chromium()
    # Chromium's helper processes can still be writing to the profile for a moment after the
    # browser process exits: a removal racing them is not the test's failure.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("chromium did not open its DevTools port")
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            target = next(t for t in targets if t["type"] == "page")
            with connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
                page = Page(ws)
                for domain in ("Page", "Runtime", "Log"):
                    page.send(f"{domain}.enable")
                page.send("Page.addScriptToEvaluateOnNewDocument", source=_RECORD_CSP)
                yield page
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung browser
                proc.kill()
                proc.wait()

"""A real headless Chromium for the dashboard tests: find it, load a page, read the DOM it built."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

from ._server import ROOT
from .conftest import need_service

#: Screenshots the browser tests leave for a human to look at.
ARTIFACTS = ROOT / "test-artifacts"


class Dom(HTMLParser):
    """Collects text by id, by (table row key, field) and the alert list items."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.cells: dict[tuple[str, str], str] = {}
        self.kv: dict[str, str] = {}
        self.alerts: list[dict[str, str]] = {}  # type: ignore[assignment]
        self.alerts = []
        self.attrs_by_id: dict[str, dict[str, str]] = {}
        self.body: dict[str, str] = {}
        self._stack: list[tuple[str, dict[str, str]]] = []
        self._row: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = a
        if tag == "tr":
            self._row = a.get("data-key")
        if "id" in a:
            self.attrs_by_id[a["id"]] = a
        self._stack.append((tag, a))
        self._text = []

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if not self._stack:
            return
        _, a = self._stack.pop()
        text = "".join(self._text).strip()
        if "id" in a:
            self.by_id[a["id"]] = text
        if tag == "td" and self._row is not None and "data-field" in a:
            self.cells[(self._row, a["data-field"])] = text
        if tag == "dd" and "data-field" in a:
            self.kv[a["data-field"]] = text
        if tag == "li" and "data-rule" in a:
            self.alerts.append({"rule": a["data-rule"], "state": a["data-state"], "text": text})
        if tag == "tr":
            self._row = None


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        need_service("chromium", "install the Debian package 'chromium'")
    assert path is not None
    return path


def browser(binary: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
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
                "--virtual-time-budget=15000",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

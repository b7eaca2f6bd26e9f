"""`asgi-perf report` against a real app's summary endpoint, over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from asgi_perf.cli import main

from .._server import ServerFactory

pytestmark = pytest.mark.e2e


@pytest.mark.slow
def test_cli_report_from_a_running_app(
    server: ServerFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`asgi-perf report` fetches a real app's summary and writes JSON or CSV."""
    base = server("tests.apps.ops_app:app", ready_path="/metrics")
    httpx.get(f"{base}/items/1")
    assert main(["report", "--url", f"{base}/metrics/summary"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["db"]["engines"][0]["queries"] == 41
    out = tmp_path / "report.csv"
    assert (
        main(
            [
                "report",
                "--url",
                f"{base}/metrics/summary",
                "--format",
                "csv",
                "-o",
                str(out),
                "--token",
                "unused",
            ]
        )
        == 0
    )
    text = out.read_text()
    assert text.startswith("section,item,field,value\n")
    assert "cache,users,hit_ratio,0.9" in text
    assert "route,GET /items/{item_id},requests,1" in text
    assert main(["report", "--url", "ftp://nope"]) == 2
    assert main(["report", "--url", "http://127.0.0.1:9/metrics/summary"]) == 2

"""The asgi-perf command: the metric reference and the demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_perf.cli import main, metrics_reference

from ._server import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_metric_reference_page_is_in_sync() -> None:
    """docs/metrics.md holds exactly the table generated from the catalogue."""
    page = (ROOT / "docs" / "metrics.md").read_text()
    block = page.split("<!-- reference:start -->\n", 1)[1].split("<!-- reference:end -->", 1)[0]
    assert block == metrics_reference(), "run ./scripts/refresh-docs"


def test_metrics_reference_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`asgi-perf metrics-reference` prints the table."""
    assert main(["metrics-reference"]) == 0
    assert "| `http_requests_total` | counter |" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_with_traffic_prints_urls_and_report(capsys: pytest.CaptureFixture[str]) -> None:
    """`asgi-perf demo --traffic` serves the app, generates load, prints URLs and a route report."""
    port = free_port()
    code = main(["demo", "--traffic", "--duration", "2", "--port", str(port), "--concurrency", "4"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"http://127.0.0.1:{port}/metrics" in out
    assert "/items/{item_id}" in out
    assert "__unmatched__" in out
    sent = int(out.split("Sent ")[1].split(" requests")[0])
    assert sent > 0

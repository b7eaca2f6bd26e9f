"""The asgi-perf command: the metric reference (the demo is in test_demo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_perf.cli import main, metrics_reference

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

"""The asgi-perf command: the metric reference, rules and Grafana output, the report's CSV rows.

The demo is tested end to end in ``e2e/test_demo.py``, ``report`` against a live app in
``e2e/test_report.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asgi_perf import PerfRegistry
from asgi_perf.cli import main, metrics_reference, summary_rows, to_csv

from ._server import ROOT


def test_metric_reference_page_is_in_sync() -> None:
    """docs/metrics.md holds exactly the table generated from the catalogue."""
    page = (ROOT / "docs" / "metrics.md").read_text()
    block = page.split("<!-- reference:start -->\n", 1)[1].split("<!-- reference:end -->", 1)[0]
    assert block == metrics_reference(), "run ./scripts/refresh-docs"


def test_metrics_reference_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`asgi-perf metrics-reference` prints the table."""
    assert main(["metrics-reference"]) == 0
    assert "| `http_requests_total` | counter |" in capsys.readouterr().out


def test_cli_rules_and_grafana(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`asgi-perf rules` prints the YAML; `asgi-perf grafana -` prints the JSON."""
    assert main(["rules", "--namespace", "shop"]) == 0
    assert "shop_http_requests_total" in capsys.readouterr().out
    assert main(["grafana", "--title", "Shop"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Shop"
    assert main(["rules", "--window", "bad"]) == 2
    assert "window must be" in capsys.readouterr().err


def test_csv_rows_cover_every_section(registry: PerfRegistry) -> None:
    """The CSV flattening has rows for timers, caches, alerts and the system."""
    registry.count("x")
    with registry.timer("t"):
        pass
    registry.counter("cache_requests_total").labels("c", "hit").inc()
    registry.counter("cache_evictions_total").labels("c", "capacity").inc()
    registry.gauge("db_pool_size").labels("e").set(1)
    summary = registry.summary()
    summary["alerts"]["firing"] = [{"rule": "R", "value": 1.0}]
    sections = {row[0] for row in summary_rows(summary)}
    assert {"general", "http", "db", "cache", "socketio", "timer", "system", "alert"} <= sections
    assert "cache,c,evictions_capacity,1" in to_csv(summary)
    assert "db,e,pool_size,1" in to_csv(summary)

"""Prometheus rules (promtool check + unit tests), the Grafana dashboard and the CLI commands."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from asgi_perf import CATALOGUE, PerfRegistry
from asgi_perf.catalogue import exposed_name
from asgi_perf.cli import main, summary_rows, to_csv
from asgi_perf.export._rules import (
    ERR_NAMESPACE,
    ERR_WINDOW,
    grafana_dashboard,
    prometheus_rules,
    rules_yaml,
    to_yaml,
)

from ._ops import exact
from ._server import ROOT, ServerFactory

DOCS = ROOT / "docs"
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "le",
    "job",
}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, labels and keywords removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        token = match.group(0)
        following = expr[match.end() :].lstrip()[:1]
        if following == "(" or token in _KEYWORDS or token.startswith("__"):
            continue
        names.add(token)
    return names


def catalogue_name(name: str, namespace: str = "") -> str | None:
    if namespace:
        name = name.removeprefix(f"{namespace}_")
    for suffix in ("", "_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix) if suffix else name
        if base in CATALOGUE:
            return base
    return None


def _rule_exprs(rules: dict[str, Any]) -> tuple[set[str], list[str]]:
    records = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return records, exprs


@pytest.mark.parametrize("namespace", ["", "shop"])
def test_every_rule_metric_is_in_the_catalogue(namespace: str) -> None:
    """Every metric a rule reads is a catalogue metric (or one of the recording rules)."""
    records, exprs = _rule_exprs(prometheus_rules(namespace))
    for expr in exprs:
        for name in metric_names(expr) - records:
            assert catalogue_name(name, namespace) is not None, (name, expr)


@pytest.mark.parametrize("namespace", ["", "shop"])
def test_every_dashboard_metric_is_in_the_catalogue(namespace: str) -> None:
    """Every metric a Grafana panel or variable queries is a catalogue metric."""
    board = grafana_dashboard(namespace)
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    for expr in exprs:
        for name in metric_names(expr):
            assert catalogue_name(name, namespace) is not None, (name, expr)
    variable = board["templating"]["list"][0]["query"]
    assert catalogue_name(variable.split("(")[1].split(",")[0], namespace) is not None


@pytest.mark.parametrize(
    ("name", "namespace", "exposed"),
    [
        ("http_requests_total", "", "http_requests_total"),
        ("http_requests_total", "shop", "shop_http_requests_total"),
        ("db_query_duration_seconds_bucket", "shop", "shop_db_query_duration_seconds_bucket"),
        ("db_query_duration_seconds_count", "", "db_query_duration_seconds_count"),
    ],
)
def test_exposed_name(name: str, namespace: str, exposed: str) -> None:
    """A catalogue name (histogram series suffixes included) gets the namespace prefix."""
    assert exposed_name(name, namespace) == exposed


@pytest.mark.parametrize("name", ["http_requests", "no_such_metric_bucket", "cache_requests_sum"])
def test_exposed_name_rejects_unknown_metrics(name: str) -> None:
    """A name outside the catalogue, with or without a series suffix, is a KeyError."""
    with pytest.raises(KeyError):
        exposed_name(name)


def test_dashboard_layout_is_valid() -> None:
    """Panel ids are unique and no two panels overlap on the 24-column grid."""
    panels = grafana_dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells
                cells.add((x, y))


def test_promtool_checks_the_rules(promtool: str, tmp_path: Path) -> None:
    """promtool check rules accepts the generated file (plain and namespaced)."""
    for namespace in ("", "shop"):
        path = tmp_path / f"rules{namespace}.yml"
        path.write_text(rules_yaml(namespace))
        result = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 20 rules found" in result.stdout


UNIT_TESTS = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'http_requests_total{job="app",method="GET",route="/orders",status="200"}'
        values: '0+90x30'
      - series: 'http_requests_total{job="app",method="GET",route="/orders",status="500"}'
        values: '0+10x30'
      - series: 'http_requests_total{job="app",method="GET",route="/quiet",status="500"}'
        values: '0+0.01x30'
      - series: 'system_disk_ratio{job="app",path="/"}'
        values: '0.95x30'
      - series: 'cache_requests_total{job="app",cache="users",result="hit"}'
        values: '0+50x30'
      - series: 'cache_requests_total{job="app",cache="users",result="miss"}'
        values: '0+50x30'
      - series: 'asgi_perf_series_overflow_total{job="app",metric="http_request_duration_seconds"}'
        values: '0 0 0 0 0 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5'
    promql_expr_test:
      - expr: 'asgi_perf:http_errors:ratio_rate5m{route="/orders"}'
        eval_time: 10m
        exp_samples:
          - labels: 'asgi_perf:http_errors:ratio_rate5m{job="app",route="/orders"}'
            value: 0.1
    alert_rule_test:
      - eval_time: 3m
        alertname: AsgiHighErrorRate
        exp_alerts: []
      - eval_time: 15m
        alertname: AsgiHighErrorRate
        exp_alerts:
          - exp_labels: {severity: critical, job: app, route: /orders}
            exp_annotations:
              summary: '/orders: 10% of requests fail with 5xx'
      - eval_time: 15m
        alertname: AsgiDiskAlmostFull
        exp_alerts:
          - exp_labels: {severity: critical, job: app, path: /}
            exp_annotations:
              summary: 'disk / at 95%'
      - eval_time: 20m
        alertname: AsgiLowCacheHitRatio
        exp_alerts:
          - exp_labels: {severity: warning, job: app, cache: users}
            exp_annotations:
              summary: 'cache users: hit ratio 50%'
      - eval_time: 7m
        alertname: AsgiSeriesOverflow
        exp_alerts:
          - exp_labels: {severity: warning, job: app, metric: http_request_duration_seconds}
            exp_annotations:
              summary: >-
                http_request_duration_seconds reached its series cap:
                label values are being folded
      - eval_time: 10m
        alertname: AsgiHighLatency
        exp_alerts: []
"""


def test_promtool_unit_tests(promtool: str, tmp_path: Path) -> None:
    """The alerts fire (and stay quiet) as intended on synthetic series, per promtool test rules."""
    (tmp_path / "rules.yml").write_text(rules_yaml())
    (tmp_path / "test.yml").write_text(UNIT_TESTS)
    result = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "test.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_files_are_current() -> None:
    """docs/ holds exactly what `asgi-perf rules` and `asgi-perf grafana` print."""
    assert (DOCS / "prometheus-rules.yml").read_text() == rules_yaml()
    shipped = json.loads((DOCS / "grafana-dashboard.json").read_text())
    assert shipped == grafana_dashboard()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"namespace": "9x"}, ERR_NAMESPACE.format("9x")), ({"window": "5"}, ERR_WINDOW.format("5"))],
)
def test_bad_rule_options(kwargs: dict[str, str], message: str) -> None:
    """A bad namespace or window is refused with a clear message."""
    with pytest.raises(ValueError, match=exact(message)):
        prometheus_rules(**kwargs)


def test_yaml_emitter_scalars() -> None:
    """Booleans, numbers, empty containers and nested lists come out as valid YAML."""
    text = to_yaml(
        {"a": True, "b": False, "c": 1.5, "d": [], "e": {}, "f": [[1, 2], "x"], "g": None}
    )
    assert "a: true" in text
    assert "b: false" in text
    assert "d: []" in text
    assert "e: {}" in text
    assert '- "x"' in text
    assert to_yaml("s") == '"s"\n'


# -- CLI ---
def test_cli_rules_and_grafana(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`asgi-perf rules` prints the YAML; `asgi-perf grafana -` prints the JSON."""
    assert main(["rules", "--namespace", "shop"]) == 0
    assert "shop_http_requests_total" in capsys.readouterr().out
    assert main(["grafana", "--title", "Shop"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Shop"
    assert main(["rules", "--window", "bad"]) == 2
    assert "window must be" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_report_from_a_running_app(
    server: ServerFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`asgi-perf report` fetches a real app's summary and writes JSON or CSV."""
    import httpx

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

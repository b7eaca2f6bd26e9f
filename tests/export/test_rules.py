"""Prometheus rules (promtool check + unit tests), the Grafana dashboard and the CLI commands."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from asgi_perf.catalogue import exposed_name
from asgi_perf.export._rules import (
    ERR_NAMESPACE,
    ERR_WINDOW,
    grafana_dashboard,
    prometheus_rules,
    rules_yaml,
    to_yaml,
)

from .._ops import exact
from .._promql import catalogue_name, metric_names, rule_exprs
from .._server import ROOT

DOCS = ROOT / "docs"


@pytest.mark.parametrize("namespace", ["", "shop"])
def test_every_rule_metric_is_in_the_catalogue(namespace: str) -> None:
    """Every metric a rule reads is a catalogue metric (or one of the recording rules)."""
    records, exprs = rule_exprs(prometheus_rules(namespace))
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

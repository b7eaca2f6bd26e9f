"""The peers' stock PromQL answers on asgi-perf's metrics with the matching compat preset.

Each preset runs a real FastAPI app on uvicorn; real requests (a 200 route, a 500, a 404) are
followed by a real scrape, and every series of that scrape becomes input series of a
``promtool test rules`` run over ``docs/compat-rules.yml``: each of the preset's stock queries must
return at least one series. Without the preset the same queries return nothing, which is what
breaks a dashboard when one switches libraries.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests._server import serve_app

pytestmark = [pytest.mark.e2e, pytest.mark.service("promtool")]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "compat-rules.yml"
APP = "tests.apps.compat_app:app"
MINUTES = 10


def rule_names(group: str) -> list[str]:
    """The recording rules of one group of the rules file (its ``- name:`` and ``- record:``
    lines; promtool checks the file's structure)."""
    names: list[str] = []
    current = ""
    for line in RULES.read_text().splitlines():
        key, _, value = line.strip().removeprefix("- ").partition(": ")
        if key == "name":
            current = value
        elif key == "record" and current == group:
            names.append(value)
    return names


def series_from_scrape(text: str) -> list[dict[str, str]]:
    """promtool input series from a scrape: counters, buckets, sums and counts grow by their
    scraped value every minute from 0 (so ``rate()`` sees them move); gauges stay constant."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created") or math.isnan(sample.value):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            series = f"{sample.name}{{{labels}}}"
            value = repr(float(sample.value))
            start = "" if family.type == "gauge" else "0+"
            values = f"{start}{value}x{MINUTES}"
            out.append({"series": series, "values": values})
    return out


def scrape_after_traffic(compat: str | None, path: str = "/metrics") -> str:
    env = {"ASGI_PERF_TEST_COMPAT": compat or ""}
    with serve_app() as start:
        base = start(APP, env=env)
        for _ in range(3):
            assert httpx.get(f"{base}/items/7").status_code == 200
        assert httpx.get(f"{base}/fail").status_code == 500
        assert httpx.get(f"{base}/missing").status_code == 404
        response = httpx.get(base + path)
        assert response.status_code == 200
        return response.text


def answering(promtool: str, tmp_path: Path, scrape: str, names: list[str]) -> dict[str, bool]:
    """Which recorded queries return at least one series, per ``promtool test rules``.

    One test case per query (``clamp_max(count(q), 1)`` is 1 when it answers and empty when it
    does not); promtool reports each failing case, so one run tells them all apart.
    """
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": name,
                "interval": "1m",
                "input_series": series_from_scrape(scrape),
                "promql_expr_test": [
                    {
                        "expr": f"clamp_max(count({name}), 1)",
                        "eval_time": f"{MINUTES}m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                ],
            }
            for name in names
        ],
    }
    path = tmp_path / "compat-test.yml"
    path.write_text(json.dumps(tests))  # JSON is YAML: promtool reads it as is
    result = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    assert "FAILED" in output or result.returncode == 0, output
    failing = {name for name in names if f'expr: "clamp_max(count({name}), 1)"' in output}
    if result.returncode != 0:
        assert failing, output  # a failure promtool did not attribute to a query: show it
    return {name: name not in failing for name in names}


PRESETS = {
    "prometheus-fastapi-instrumentator": "prometheus-fastapi-instrumentator",
    "starlette-exporter": "starlette-exporter",
    "opentelemetry": "opentelemetry",
}


@pytest.fixture(scope="module")
def scrapes() -> dict[str | None, str]:
    return {preset: scrape_after_traffic(preset) for preset in (*PRESETS, None)}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_stock_queries_answer_with_the_preset(
    preset: str, scrapes: dict[str | None, str], promtool: str, tmp_path: Path
) -> None:
    """Every stock query of the peer answers on a real scrape of asgi-perf with its preset."""
    names = rule_names(PRESETS[preset])
    assert len(names) >= 4
    assert answering(promtool, tmp_path, scrapes[preset], names) == dict.fromkeys(names, True)


def test_stock_queries_of_the_peers_fail_without_a_preset(
    scrapes: dict[str | None, str], promtool: str, tmp_path: Path
) -> None:
    """Without a preset the peers' queries on their own names, labels and status classes return
    nothing (the process panels answer: the collectors are on by default)."""
    names = rule_names("prometheus-fastapi-instrumentator") + rule_names("starlette-exporter")
    result = answering(promtool, tmp_path, scrapes[None], names)
    assert not result["pfi:errors:ratio1m"]
    assert not result["pfi:latency:p99_highr"]
    assert not result["starlette:requests:rate1m"]
    assert not result["starlette:latency:p95_by_path"]
    assert result["pfi:memory:resident"]
    assert result["starlette:cpu:rate1m"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_scrape_passes_promtool_check_metrics(
    preset: str, scrapes: dict[str | None, str], promtool: str
) -> None:
    """The renamed exposition is as clean as the native one: ``promtool check metrics`` is quiet."""
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=scrapes[preset],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_rules_file_is_valid(promtool: str) -> None:
    """docs/compat-rules.yml passes ``promtool check rules``."""
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr

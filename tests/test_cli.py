"""The asgi-perf command: --version, usage errors, the metric reference, rules and Grafana
output, the report's CSV rows and `report --url` against a real server.

The demo is tested end to end in ``e2e/test_demo.py``, ``report`` against a live app in
``e2e/test_report.py``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from asgi_perf import PerfRegistry, __version__
from asgi_perf.cli import (
    ERR_NOT_JSON,
    ERR_NOT_SUMMARY,
    ERR_URL,
    UsageError,
    main,
    metrics_reference,
    summary_rows,
    summary_url,
    to_csv,
)

from ._ops import exact
from ._server import ROOT, free_port, serve_app
from .test_optional import run_without


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
    """The CSV flattening has rows for timers, caches, slow statements, alerts and the system."""
    registry.count("x")
    with registry.timer("t"):
        pass
    registry.counter("cache_requests_total").labels("c", "hit").inc()
    registry.counter("cache_evictions_total").labels("c", "capacity").inc()
    registry.gauge("db_pool_size").labels("e").set(1)
    summary = registry.summary()
    summary["alerts"]["firing"] = [{"rule": "R", "value": 1.0}]
    summary["db"]["slow_query_groups"] = [
        {
            "engine": "e",
            "operation": "SELECT",
            "fingerprint": "f1",
            "sql": "SELECT ?",
            "count": 4,
            "p95": 0.5,
            "max": 0.75,
            "last_seen": 1.0,
        }
    ]
    sections = {row[0] for row in summary_rows(summary)}
    assert {"general", "http", "db", "cache", "socketio", "timer", "system", "alert"} <= sections
    assert "slow_query,e f1,count,4" in to_csv(summary)
    assert "slow_query,e f1,sql,SELECT ?" in to_csv(summary)
    assert "cache,c,evictions_capacity,1" in to_csv(summary)
    assert "db,e,pool_size,1" in to_csv(summary)


# -- --version and usage errors ---
def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: a fresh interpreter, real stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "asgi_perf", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], start: str) -> str:
    """Exit code 2 and exactly one line on stderr, starting with ``start``; no traceback."""
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(start), lines[0]
    return lines[0]


def test_version() -> None:
    """`asgi-perf --version` prints the package version and exits 0."""
    result = run_cli("--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"asgi-perf {__version__}\n",
        "",
    )


@pytest.mark.parametrize(
    ("args", "start"),
    [
        ((), "asgi-perf: the following arguments are required: command"),
        (("frobnicate",), "asgi-perf: argument command: invalid choice: 'frobnicate'"),
        (("--bogus", "rules"), "asgi-perf: unrecognized arguments: --bogus"),
        (("report", "--format", "xml"), "asgi-perf report: argument --format: invalid choice"),
        (("demo", "--port", "eighty"), "asgi-perf demo: argument --port: invalid int value"),
        (("rules", "--window", "bad"), "asgi-perf rules: window must be"),
    ],
)
def test_bad_arguments_are_one_line(args: tuple[str, ...], start: str) -> None:
    """A bad command line is one line on stderr and exit code 2, pointing at --help."""
    line = assert_user_error(run_cli(*args), start)
    if "argument" in start:
        assert line.endswith("--help)")


def test_bad_arguments_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """Called as a function, main() exits 2 on a bad argument, with the same single line."""
    with pytest.raises(SystemExit) as caught:
        main(["report", "--format", "xml"])
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("asgi-perf report: argument --format: invalid choice: 'xml'")
    assert err.endswith(" (see asgi-perf report --help)\n")
    assert len(err.splitlines()) == 1


# -- report --url ---
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h:8000", "http://h:8000/metrics/summary"),
        ("http://h:8000/", "http://h:8000/metrics/summary"),
        ("http://h:8000/metrics", "http://h:8000/metrics/summary"),
        ("http://h:8000/metrics/", "http://h:8000/metrics/summary"),
        ("http://h:8000/metrics/summary", "http://h:8000/metrics/summary"),
        ("https://h/api", "https://h/api/metrics/summary"),
        ("https://h/api/metrics", "https://h/api/metrics/summary"),
        ("https://h/api/metrics/summary/", "https://h/api/metrics/summary"),
        ("http://h/metrics?x=1#top", "http://h/metrics/summary?x=1"),
        ("http://h/prom/summary", "http://h/prom/summary"),
        ("http://h/metrics/summary?window=60", "http://h/metrics/summary?window=60"),
    ],
)
def test_summary_url(url: str, expected: str) -> None:
    """--url takes the base URL (mount path kept), the /metrics URL or the summary URL (also
    under a custom metrics path)."""
    assert summary_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h/metrics",
        "h:8000",
        "http://",
        "127.0.0.1:8000/metrics",
        "http://h:port/",
        "http://[h",
    ],
)
def test_summary_url_rejects_what_is_no_http_url(url: str) -> None:
    """Anything but an http(s) URL with a host is a usage error naming the URL."""
    with pytest.raises(UsageError, match=exact(ERR_URL.format(url))):
        summary_url(url)


@pytest.fixture(scope="module")
def cli_app() -> Iterator[str]:
    """tests/apps/cli_app.py under a real uvicorn, after one request to each instrumented app."""
    with serve_app() as start:
        base = start("tests.apps.cli_app:app", ready_path="/metrics")
        assert httpx.get(f"{base}/only-root").status_code == 200
        assert httpx.get(f"{base}/api/only-api").status_code == 200
        assert httpx.get(f"{base}/secure/only-secure").status_code == 200
        yield base


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "mounted"),
    [
        ("", False),
        ("/", False),
        ("/metrics", False),
        ("/metrics/summary", False),
        ("/api", True),
        ("/api/metrics/", True),
        ("/api/metrics/summary", True),
    ],
)
def test_report_reads_the_summary_from_any_url_form(
    cli_app: str, path: str, mounted: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """The base URL, the /metrics URL and the summary URL of a real server all report the same
    app's summary; a base URL with a mount path reads the mounted app's, not the root's."""
    assert main(["report", "--url", cli_app + path]) == 0
    routes = {r["route"] for r in json.loads(capsys.readouterr().out)["http"]["routes"]}
    assert ("/only-root" in routes) is not mounted
    assert "/api/only-api" in routes


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/nope", "{} answered HTTP 404 Not Found"),
        ("/secure", "{} answered HTTP 401 Unauthorized (does it need --token?)"),
        ("/plain", ERR_NOT_JSON),
        ("/list", ERR_NOT_SUMMARY),
    ],
)
def test_report_errors_from_a_real_server(
    cli_app: str, path: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 404, a 401, an answer that is not JSON and JSON that is not a summary: one line, exit 2."""
    assert main(["report", "--url", cli_app + path]) == 2
    url = f"{cli_app}{path}/metrics/summary"
    assert capsys.readouterr() == ("", f"asgi-perf report: {message.format(url)}\n")


@pytest.mark.slow
def test_report_with_the_token(cli_app: str, capsys: pytest.CaptureFixture[str]) -> None:
    """With --token the protected summary is read."""
    assert main(["report", "--url", f"{cli_app}/secure", "--token", "s3cret"]) == 0
    routes = {r["route"] for r in json.loads(capsys.readouterr().out)["http"]["routes"]}
    assert "/secure/only-secure" in routes
    assert "/only-root" not in routes


@pytest.mark.slow
def test_report_error_in_a_fresh_process_has_no_traceback(cli_app: str) -> None:
    """As a user runs it: a non-JSON answer is one line on stderr and exit code 2."""
    result = run_cli("report", "--url", f"{cli_app}/plain")
    url = f"{cli_app}/plain/metrics/summary"
    assert assert_user_error(result, "asgi-perf report: ") == (
        f"asgi-perf report: {ERR_NOT_JSON.format(url)}"
    )


def test_report_from_a_server_that_hangs_up(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that closes the connection without answering: one line naming the URL, exit 2."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def hang_up() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)

        thread = threading.Thread(target=hang_up)
        thread.start()
        try:
            assert main(["report", "--url", f"http://127.0.0.1:{port}"]) == 2
        finally:
            thread.join(timeout=30)
    url = f"http://127.0.0.1:{port}/metrics/summary"
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"asgi-perf report: cannot reach {url}: ")
    assert len(err.splitlines()) == 1


def test_report_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening on the port: one line naming the URL and the reason, exit 2."""
    url = f"http://127.0.0.1:{free_port()}/metrics/summary"
    assert main(["report", "--url", url]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"asgi-perf report: cannot reach {url}: ")
    assert "Connection refused" in err
    assert len(err.splitlines()) == 1


def test_report_bad_url() -> None:
    """A URL that is not http(s): one line, exit 2."""
    assert_user_error(run_cli("report", "--url", "ftp://x"), "asgi-perf report: --url must be")


@pytest.mark.slow
def test_report_to_an_unwritable_file(
    cli_app: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output file that cannot be written: one line, exit 2."""
    target = tmp_path / "missing" / "report.json"
    assert main(["report", "--url", cli_app, "-o", str(target)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("asgi-perf report: [Errno 2] No such file or directory")
    assert len(err.splitlines()) == 1


def test_demo_without_its_extra() -> None:
    """`asgi-perf demo` without the demo extra says what to install, on one line, exit 2."""
    result = run_without(
        "uvicorn", "from asgi_perf.cli import main; raise SystemExit(main(['demo']))"
    )
    line = assert_user_error(result, "asgi-perf demo: ")
    assert line == 'asgi-perf demo: the demo needs uvicorn: pip install "asgi-perf[demo]"'

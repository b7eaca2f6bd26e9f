"""The ``asgi-perf`` command."""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, cast

from .__about__ import __version__
from ._optional import requires
from .catalogue import CATALOGUE, STANDARD_METRICS

if TYPE_CHECKING:
    from .operations import Summary


def metrics_reference() -> str:
    """The metric reference table (Markdown), generated from the catalogue."""
    lines = [
        "| metric | type | labels | help |",
        "|---|---|---|---|",
    ]
    for spec in CATALOGUE.values():
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "—"
        lines.append(f"| `{spec.name}` | {spec.kind} | {labels} | {spec.help} |")
    for spec in STANDARD_METRICS.values():
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "—"
        note = "prometheus_client's collector; never namespaced"
        lines.append(f"| `{spec.name}` | {spec.kind} | {labels} | {spec.help} ({note}) |")
    return "\n".join(lines) + "\n"


def summary_rows(summary: Summary) -> Iterator[tuple[str, str, str, Any]]:
    """``(section, item, field, value)`` rows flattening a summary, for the CSV report."""
    yield from (("general", "", k, summary[k]) for k in ("generated_at", "uptime_seconds"))
    http = summary["http"]
    for key in ("requests", "errors", "rate", "error_rate", "p95", "in_progress"):
        yield "http", "", key, http[key]
    for route in http["routes"]:
        item = f"{route['method']} {route['route']}"
        for key, value in route.items():
            if key not in ("method", "route"):
                yield "route", item, key, value
    for engine in summary["db"]["engines"]:
        for key, value in engine.items():
            if key not in ("engine", "pool", "recent_slow"):
                yield "db", engine["engine"], key, value
            elif key == "pool":
                yield from (
                    ("db", engine["engine"], f"pool_{k}", v) for k, v in engine["pool"].items()
                )
    for group in summary["db"]["slow_query_groups"]:
        item = f"{group['engine']} {group['fingerprint']}"
        for slow_key in ("operation", "count", "p95", "max", "last_seen", "sql"):
            yield "slow_query", item, slow_key, group[slow_key]
    for cache in summary["cache"]["caches"]:
        for key, value in cache.items():
            if key == "evictions":
                evictions = cache["evictions"]
                yield from (
                    ("cache", cache["cache"], f"evictions_{k}", v) for k, v in evictions.items()
                )
            elif key != "cache":
                yield "cache", cache["cache"], key, value
    for key, value in summary["socketio"].items():
        if not isinstance(value, dict):
            yield "socketio", "", key, value
    for name, stats in summary["timers"]["timers"].items():
        yield from (("timer", name, k, v) for k, v in stats.items())
    for key, value in summary["system"].items():
        yield "system", "", key, value
    for alert in summary["alerts"]["firing"]:
        yield "alert", alert["rule"], "value", alert["value"]


def to_csv(summary: Summary) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "item", "field", "value"])
    for section, item, field, value in summary_rows(summary):
        writer.writerow([section, item, field, "" if value is None else value])
    return out.getvalue()


ERR_URL = "--url must be an http:// or https:// URL with a host, got {!r}"
ERR_UNREACHABLE = "cannot reach {}: {}"
ERR_STATUS = "{} answered HTTP {} {}"
ERR_STATUS_AUTH = ERR_STATUS + " (does it need --token?)"
ERR_NOT_JSON = "{} did not answer JSON: is it an asgi-perf app?"
ERR_NOT_SUMMARY = "{} did not answer an asgi-perf summary"
SUMMARY_PATH = "/metrics/summary"


class UsageError(Exception):
    """A mistake the user can fix (a bad argument, a wrong URL): one line, exit code 2."""


def summary_url(url: str) -> str:
    """The summary endpoint for ``--url``: the app's base URL, its ``/metrics`` URL or the summary
    URL itself. A base URL may carry a mount path: ``http://h/api`` reads
    ``http://h/api/metrics/summary``; ``http://h/api/metrics`` reads the same. A URL ending in
    ``/summary`` is used as it is (an app serving its metrics at ``/prom`` has ``/prom/summary``).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:  # an unclosed "[" or a port that is not a number
        raise UsageError(ERR_URL.format(url)) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(ERR_URL.format(url))
    path = parts.path.rstrip("/")
    if path.endswith("/metrics"):
        path += "/summary"
    elif not path.endswith("/summary"):  # a custom metrics path's summary is used as given
        path += SUMMARY_PATH
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def fetch_summary(url: str, token: str | None = None, timeout: float = 10.0) -> Summary:
    """GET a running app's JSON summary (a :class:`~asgi_perf.operations.Summary`); ``url`` as
    :func:`summary_url` takes it.

    :raises UsageError: for a bad URL, an unreachable server, an HTTP error status or an answer
        that is not a summary.
    """
    url = summary_url(url)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - scheme checked above
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read()
    except urllib.error.HTTPError as exc:
        template = ERR_STATUS_AUTH if exc.code in (401, 403) else ERR_STATUS
        raise UsageError(template.format(url, exc.code, exc.reason)) from exc
    except urllib.error.URLError as exc:
        raise UsageError(ERR_UNREACHABLE.format(url, exc.reason)) from exc
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, garbled answers
        raise UsageError(ERR_UNREACHABLE.format(url, str(exc) or type(exc).__name__)) from exc
    try:
        data = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and undecodable bytes alike
        raise UsageError(ERR_NOT_JSON.format(url)) from exc
    if not isinstance(data, dict) or not isinstance(data.get("http"), dict):
        raise UsageError(ERR_NOT_SUMMARY.format(url))
    return cast("Summary", data)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line on stderr and exit code 2, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="asgi-perf", description="Performance metrics for ASGI services.")
    parser.add_argument("--version", action="version", version=f"asgi-perf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run an example app with every instrument on")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument(
        "--traffic", action="store_true", help="generate load, print a report and exit"
    )
    demo.add_argument(
        "--no-background-traffic",
        dest="background_traffic",
        action="store_false",
        help="without --traffic: serve only, send no light load to itself",
    )
    demo.add_argument(
        "--duration", type=float, default=10.0, help="seconds of traffic (with --traffic)"
    )
    demo.add_argument(
        "--concurrency", type=int, default=8, help="concurrent clients (with --traffic)"
    )
    sub.add_parser("metrics-reference", help="print the metric reference table (Markdown)")
    report = sub.add_parser("report", help="export a running app's summary as JSON or CSV")
    report.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="the app's base URL, its /metrics URL or its /metrics/summary URL",
    )
    report.add_argument("--format", choices=("json", "csv"), default="json")
    report.add_argument("--token", help="bearer token, if the metrics need one")
    report.add_argument("--output", "-o", help="write to this file instead of stdout")
    rules = sub.add_parser("rules", help="print Prometheus recording and alerting rules (YAML)")
    rules.add_argument("--namespace", default="", help="the PerfRegistry namespace")
    rules.add_argument("--window", default="5m", help="rate window, e.g. 5m")
    grafana = sub.add_parser("grafana", help="print an importable Grafana dashboard (JSON)")
    grafana.add_argument("--namespace", default="", help="the PerfRegistry namespace")
    grafana.add_argument("--title", default="asgi-perf")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "metrics-reference":
            sys.stdout.write(metrics_reference())
            return 0
        if args.command in ("rules", "grafana", "report"):
            return _operations_command(args)
        return _demo_command(args)
    except (UsageError, ValueError, OSError, ImportError) as exc:
        sys.stderr.write(f"asgi-perf {args.command}: {exc}\n")
        return 2


def _demo_command(args: argparse.Namespace) -> int:
    with requires("the demo", extra="demo"):
        from .demo import run_demo

        return run_demo(
            host=args.host,
            port=args.port,
            traffic=args.traffic,
            duration=args.duration,
            concurrency=args.concurrency,
            background_traffic=args.background_traffic,
        )


def _operations_command(args: argparse.Namespace) -> int:
    from .export import grafana_dashboard, rules_yaml

    if args.command == "rules":
        text = rules_yaml(args.namespace, args.window)
    elif args.command == "grafana":
        text = json.dumps(grafana_dashboard(args.namespace, args.title), indent=2) + "\n"
    else:
        summary = fetch_summary(args.url, args.token)
        text = to_csv(summary) if args.format == "csv" else json.dumps(summary, indent=2) + "\n"
    if getattr(args, "output", None):
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

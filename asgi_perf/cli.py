"""The ``asgi-perf`` command."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from .catalogue import CATALOGUE


def metrics_reference() -> str:
    """The metric reference table (Markdown), generated from the catalogue."""
    lines = [
        "| metric | type | labels | help |",
        "|---|---|---|---|",
    ]
    for spec in CATALOGUE.values():
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "—"
        lines.append(f"| `{spec.name}` | {spec.kind} | {labels} | {spec.help} |")
    return "\n".join(lines) + "\n"


def summary_rows(summary: dict[str, Any]) -> Iterator[tuple[str, str, str, Any]]:
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
            if key == "pool":
                yield from (("db", engine["engine"], f"pool_{k}", v) for k, v in value.items())
            elif key not in ("engine", "recent_slow"):
                yield "db", engine["engine"], key, value
    for cache in summary["cache"]["caches"]:
        for key, value in cache.items():
            if key == "evictions":
                yield from (
                    ("cache", cache["cache"], f"evictions_{k}", v) for k, v in value.items()
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


def to_csv(summary: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "item", "field", "value"])
    for section, item, field, value in summary_rows(summary):
        writer.writerow([section, item, field, "" if value is None else value])
    return out.getvalue()


def fetch_summary(url: str, token: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """GET a running app's ``/metrics/summary``."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--url must be an http:// or https:// URL, got {url!r}")
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - scheme checked above
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        data: dict[str, Any] = json.loads(response.read())
    return data


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asgi-perf", description="Performance metrics for ASGI services."
    )
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
        "--url", default="http://127.0.0.1:8000/metrics/summary", help="the summary URL"
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
    if args.command == "metrics-reference":
        sys.stdout.write(metrics_reference())
        return 0
    if args.command in ("rules", "grafana", "report"):
        return _operations_command(args)
    from ._demo_run import run_demo  # needs the demo extra

    try:
        return run_demo(
            host=args.host,
            port=args.port,
            traffic=args.traffic,
            duration=args.duration,
            concurrency=args.concurrency,
            background_traffic=args.background_traffic,
        )
    except ValueError as exc:
        sys.stderr.write(f"asgi-perf demo: {exc}\n")
        return 2


def _operations_command(args: argparse.Namespace) -> int:
    from .rules import grafana_dashboard, rules_yaml

    try:
        if args.command == "rules":
            text = rules_yaml(args.namespace, args.window)
        elif args.command == "grafana":
            text = json.dumps(grafana_dashboard(args.namespace, args.title), indent=2) + "\n"
        else:
            summary = fetch_summary(args.url, args.token)
            text = to_csv(summary) if args.format == "csv" else json.dumps(summary, indent=2) + "\n"
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"asgi-perf {args.command}: {exc}\n")
        return 2
    if getattr(args, "output", None):
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

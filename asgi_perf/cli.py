"""The ``asgi-perf`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
        "--duration", type=float, default=10.0, help="seconds of traffic (with --traffic)"
    )
    demo.add_argument(
        "--concurrency", type=int, default=8, help="concurrent clients (with --traffic)"
    )
    sub.add_parser("metrics-reference", help="print the metric reference table (Markdown)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "metrics-reference":
        sys.stdout.write(metrics_reference())
        return 0
    from ._demo import run_demo  # needs the demo extras (starlette, uvicorn, httpx)

    return run_demo(
        host=args.host,
        port=args.port,
        traffic=args.traffic,
        duration=args.duration,
        concurrency=args.concurrency,
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""SQLAlchemy instrumentation cost in CPU instructions per statement, counted by callgrind.

The sharp case of ``bench_sqlalchemy``: a sync SQLite ``SELECT 1`` on one connection, bare and
behind each contender, counted by valgrind's callgrind so that machine load does not move the
result (see ``_callgrind.py``). The bare statement's instructions per microsecond, measured side by
side by ``./scripts/bench sqlalchemy``, turn the added instructions into an estimate in µs.

Usage: ./scripts/bench sqlalchemy_instructions [--statements 2000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._callgrind import per_operation, require_valgrind  # noqa: E402

CONTENDERS = ["bare", "asgi-perf", "asgi-perf +stats", "FAQ recipe", "OTel (forced)"]


def child(contender: str, statements: int) -> None:
    """Run ``statements`` sync SQLite ``SELECT 1`` on one engine (under callgrind)."""
    from sqlalchemy import create_engine

    from asgi_perf import PerfRegistry
    from asgi_perf.sqlalchemy import instrument_engine
    from benchmarks.bench_sqlalchemy import STMT, faq_recipe, otel

    engine = create_engine("sqlite://")
    if contender == "asgi-perf":
        instrument_engine(engine, registry=PerfRegistry(), name="b")
    elif contender == "asgi-perf +stats":
        instrument_engine(engine, registry=PerfRegistry(), name="b", statement_stats=True)
    elif contender == "FAQ recipe":
        faq_recipe(engine)
    elif contender == "OTel (forced)":
        otel([engine], force=True)
    with engine.connect() as conn:
        for _ in range(50):  # warm-up: compiled cache, label children
            conn.execute(STMT).scalar()
        for _ in range(statements):
            conn.execute(STMT).scalar()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--statements", type=int, default=2000)
    parser.add_argument("--child", nargs=2, metavar=("CONTENDER", "N"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    require_valgrind()
    print(f"python {sys.version.split()[0]}; sync SQLite SELECT 1; {args.statements} statements")
    print("| contender | instructions/statement | added |")
    print("|---|---|---|")
    bare = 0.0
    for contender in CONTENDERS:
        count = per_operation([__file__, "--child", contender], args.statements)
        if contender == "bare":
            bare = count
        print(f"| {contender} | {count / 1000:.1f}k | +{(count - bare) / 1000:.1f}k |", flush=True)


if __name__ == "__main__":
    main()

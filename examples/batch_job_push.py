"""A batch job that pushes its metrics to a Prometheus Pushgateway when it ends, however it ends.

Needs:  pip install "asgi-perf[cachetools]" and a Pushgateway (Debian: prometheus-pushgateway)
Run:    python examples/batch_job_push.py --gateway http://127.0.0.1:9091 --rows 500
        python examples/batch_job_push.py --gateway http://127.0.0.1:9091 --fail   # exits 1
Then:   curl -s 127.0.0.1:9091/metrics | grep 'job="nightly_import"'

Each run replaces the numbers of the previous one in its group (job + instance); a failed run
leaves the last success time in place, so an alert on
``time() - batch_job_last_success_timestamp_seconds > 2 * 86400`` fires only when the job has
not succeeded for two days.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

from asgi_perf import PerfRegistry
from asgi_perf.cache import LRUCache
from asgi_perf.export import push_on_exit

registry = PerfRegistry()
customers: LRUCache[int, str] = LRUCache(100, name="customers", registry=registry)


@registry.timed("import_row")
def import_row(row: int) -> None:
    customer = row % 40
    if customers.get(customer) is None:
        customers[customer] = f"customer-{customer}"  # a lookup the cache saves next time
    registry.count("rows_imported")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gateway", default=os.environ.get("PUSHGATEWAY_URL", "http://127.0.0.1:9091")
    )
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--fail", action="store_true", help="fail halfway, to see a failed run")
    args = parser.parse_args(argv)
    # One group per job and host: two hosts running the job do not overwrite each other.
    group = {"instance": socket.gethostname()}
    with push_on_exit(registry, args.gateway, "nightly_import", grouping_key=group):
        for row in range(args.rows):
            if args.fail and row == args.rows // 2:
                raise SystemExit(f"row {row}: upstream refused the import")
            import_row(row)
    print(f"imported {args.rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Instruction counts from valgrind's callgrind, for benchmarks that must not move with load.

The same binary and input give the same count whatever else the machine does. A benchmark runs
its workload in a child process twice, with 0 and with N operations after the same warm-up; the
difference over N is the cost of one operation, start-up and imports cancelling out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def require_valgrind() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian package 'valgrind')")


def instructions(argv: list[str]) -> int:
    """Instructions executed by ``python argv...`` under callgrind."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    done = subprocess.run(command + argv, capture_output=True, text=True, check=True)
    found = COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError("callgrind printed no instruction count:\n" + done.stderr[-2000:])
    return int(found.group(1))


def per_operation(argv: list[str], n: int) -> float:
    """Instructions per operation: ``argv + [str(n)]`` minus ``argv + ["0"]``, over ``n``."""
    return (instructions([*argv, str(n)]) - instructions([*argv, "0"])) / n

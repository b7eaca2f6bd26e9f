"""Reading PromQL in tests: which metrics an expression selects, and which catalogue entry each is."""

from __future__ import annotations

import re
from typing import Any

from asgi_perf import CATALOGUE

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


def rule_exprs(rules: dict[str, Any]) -> tuple[set[str], list[str]]:
    records = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return records, exprs

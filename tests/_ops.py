"""Helpers shared by the operations-layer tests."""

from __future__ import annotations

import re


def exact(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern matching exactly ``message``."""
    return f"^{re.escape(message)}$"

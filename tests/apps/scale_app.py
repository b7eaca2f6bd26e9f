"""A FastAPI app for multi-worker tests: run it with ``--workers N`` and PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import os

from fastapi import FastAPI

from asgi_perf import instrument
from asgi_perf.cache import LRUCache

app = FastAPI()
registry = instrument(app)
# A scrape-time gauge per worker: three entries in every worker's cache.
words: LRUCache[str, int] = LRUCache(10, name="words", registry=registry)
for word in ("a", "b", "c"):
    words[word] = len(word)


@app.get("/")
async def index() -> str:
    return "ok"


@app.get("/pid")
async def pid() -> int:
    return os.getpid()

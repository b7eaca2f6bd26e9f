"""Load test for the asgi-perf demo (or any app with the same routes) with Locust.

Locust is not an asgi-perf dependency:

    pip install locust
    asgi-perf demo &                       # or: ./scripts/demo
    locust -f examples/locustfile.py --host http://127.0.0.1:8000 \\
        --headless --users 50 --spawn-rate 10 --run-time 1m

Watch http://127.0.0.1:8000/metrics/dashboard while it runs: Locust's own latency report and the
server-side figures (route p95, DB slow queries, cache hit ratios) should tell the same story.
Locust names every request by its route template, so its table lines up with the route labels.
"""

from __future__ import annotations

import random

from locust import HttpUser, between, task

CATEGORIES = ("books", "games", "garden", "kitchen", "music", "office", "sports", "toys")


def product_id() -> int:
    # The same skew as the demo's own traffic: popular products hit the cache, the tail misses.
    if random.random() < 0.15:
        return random.randint(1, 500)
    return min(500, int(random.paretovariate(1.2)))


class Shopper(HttpUser):
    wait_time = between(0.05, 0.5)

    @task(45)
    def product(self) -> None:
        self.client.get(f"/products/{product_id()}", name="/products/{product_id}")

    @task(10)
    def product_fresh(self) -> None:
        self.client.get(f"/products/{product_id()}/fresh", name="/products/{product_id}/fresh")

    @task(15)
    def category(self) -> None:
        self.client.get(f"/categories/{random.choice(CATEGORIES)}", name="/categories/{category}")

    @task(8)
    def search(self) -> None:
        self.client.get("/search", params={"q": random.choice(("red", "blue", "large"))})

    @task(8)
    def order(self) -> None:
        self.client.post("/orders", json={"product_id": product_id(), "qty": 1})

    @task(4)
    def report(self) -> None:
        self.client.get("/reports/sales")  # deliberately slow: 150-400 ms inside SQLite

    @task(3)
    def error(self) -> None:
        with self.client.get("/error", catch_response=True) as response:
            if response.status_code == 500:
                response.success()  # expected: the demo's failing route


class Dashboard(HttpUser):
    """One operator polling the JSON summary, as the dashboard page does."""

    fixed_count = 1
    wait_time = between(5, 5)

    @task
    def summary(self) -> None:
        self.client.get("/metrics/summary")

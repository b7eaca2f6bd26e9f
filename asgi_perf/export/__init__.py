"""Export: the ``/metrics`` app, Pushgateway pushes, multi-worker mode, alert rules and Grafana.

:func:`metrics_app` serves the registry (content negotiation, gzip, optional auth; the
operations endpoints with ``operations=True``);
:func:`push` / :func:`push_on_exit` send it to a Pushgateway; :func:`enable_multiprocess` merges
every worker's figures (``child_exit`` is the gunicorn hook); :func:`rules_yaml` and
:func:`grafana_dashboard` turn the catalogue into Prometheus rules and a dashboard. See
``docs/exposition.md`` and ``docs/deployment.md``.
"""

from ._exposition import (
    OPS_ENDPOINTS,
    MetricsApp,
    metrics_app,
)
from ._multiprocess import (
    MULTIPROC_ENV,
    Multiprocess,
    child_exit,
    enable_multiprocess,
    mark_process_dead,
)
from ._push import (
    DEFAULT_TIMEOUT,
    JobOutcome,
    PushError,
    PushOnExit,
    delete,
    push,
    push_on_exit,
)
from ._rules import (
    grafana_dashboard,
    prometheus_rules,
    rules_yaml,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MULTIPROC_ENV",
    "OPS_ENDPOINTS",
    "JobOutcome",
    "MetricsApp",
    "Multiprocess",
    "PushError",
    "PushOnExit",
    "child_exit",
    "delete",
    "enable_multiprocess",
    "grafana_dashboard",
    "mark_process_dead",
    "metrics_app",
    "prometheus_rules",
    "push",
    "push_on_exit",
    "rules_yaml",
]

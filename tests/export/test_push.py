"""Pushgateway support, against a real ``prometheus-pushgateway`` on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.exposition import default_handler

from asgi_perf import PerfRegistry
from asgi_perf.cache import LRUCache
from asgi_perf.export import _push as push_module
from asgi_perf.export import enable_multiprocess
from asgi_perf.export._push import (
    DEFAULT_TIMEOUT,
    ERR_AUTH_TWICE,
    ERR_BASIC,
    ERR_GATEWAY,
    ERR_GROUPING_KEY,
    ERR_HANDLER,
    ERR_JOB,
    ERR_METHOD,
    ERR_REGISTRY,
    ERR_TIMEOUT,
    PushError,
    delete,
    push,
    push_on_exit,
)

from .._multiprocess import live_process, write_worker
from .._pushgateway import PASSWORD, USER, Pushgateway, value
from .._server import ROOT, free_port
from .._time import FakeClock


@pytest.fixture
def closed_port() -> str:
    """A gateway address on 127.0.0.1 where nothing listens (connections are refused)."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def silent_port() -> Iterator[str]:
    """A gateway address that accepts connections into its backlog and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def batch_registry() -> PerfRegistry:
    """A registry as a batch job fills it: custom counts, a native counter and histogram, a cache."""
    registry = PerfRegistry()
    registry.count("rows", 5)
    Counter("files_read", "Files read.", registry=registry.prometheus).inc(3)
    hist = Histogram("step_seconds", "Step time.", buckets=(0.1, 1.0), registry=registry.prometheus)
    hist.observe(0.05)
    hist.observe(0.5)
    words: LRUCache[str, int] = LRUCache(10, name="words", registry=registry)
    words["a"] = 1
    words.get("a")
    words.get("b")
    return registry


# -- explicit push ---------------------------------------------------------------------------------
def test_push_sends_every_collector_with_grouping_labels(pushgateway: Pushgateway) -> None:
    """Counters, histograms and the scrape-time cache collector arrive with job and instance."""
    registry = batch_registry()
    registry.push(pushgateway.url, "nightly", grouping_key={"instance": "host-1"})
    got = pushgateway.samples(job="nightly", instance="host-1")
    assert value(got, "app_events_total", name="rows") == 5
    assert value(got, "files_read_total") == 3
    assert value(got, "step_seconds_bucket", le="0.1") == 1
    assert value(got, "step_seconds_bucket", le="1") == 2
    assert value(got, "step_seconds_count") == 2
    assert value(got, "step_seconds_sum") == 0.55
    assert value(got, "cache_requests_total", cache="words", result="hit") == 1
    assert value(got, "cache_requests_total", cache="words", result="miss") == 1
    assert value(got, "cache_entries", cache="words") == 1
    assert {dict(labels)["job"] for _, labels in got} == {"nightly"}
    assert {dict(labels)["instance"] for _, labels in got} == {"host-1"}


def test_created_samples_are_not_pushed(pushgateway: Pushgateway) -> None:
    """prometheus_client's ``*_created`` samples stay home; the values they belong to arrive."""
    registry = batch_registry()
    push(registry, pushgateway.url, "created")
    got = pushgateway.samples(job="created")
    assert not [name for name, _ in got if name.endswith("_created")]
    assert value(got, "files_read_total") == 3
    assert value(got, "step_seconds_count") == 2


def test_put_replaces_the_group_and_add_keeps_other_metrics(pushgateway: Pushgateway) -> None:
    """``put`` drops metrics the new push lacks; ``add`` replaces only the ones it sends."""
    first = PerfRegistry()
    Gauge("old_metric", "Only in the first push.", registry=first.prometheus).set(7)
    first.count("rows", 1)
    first.push(pushgateway.url, "sem")
    second = PerfRegistry()
    second.count("rows", 2)
    second.push(pushgateway.url, "sem", method="add")
    got = pushgateway.samples(job="sem")
    assert value(got, "old_metric") == 7
    assert value(got, "app_events_total", name="rows") == 2
    second.push(pushgateway.url, "sem", method="put")
    got = pushgateway.samples(job="sem")
    assert value(got, "old_metric") is None
    assert value(got, "app_events_total", name="rows") == 2


def test_delete_removes_only_that_group(pushgateway: Pushgateway) -> None:
    """delete() removes one group; other groups of the job stay; a missing group is no error."""
    registry = batch_registry()
    registry.push(pushgateway.url, "del", grouping_key={"instance": "a"})
    registry.push(pushgateway.url, "del", grouping_key={"instance": "b"})
    delete(pushgateway.url, "del", grouping_key={"instance": "a"})
    assert [g["labels"] for g in pushgateway.groups()] == [{"job": "del", "instance": "b"}]
    delete(pushgateway.url, "never-pushed")


def test_awkward_job_and_label_values_arrive_exactly(pushgateway: Pushgateway) -> None:
    """Slashes, spaces and empty values in the group name are encoded, not mangled."""
    registry = PerfRegistry()
    registry.count("rows", 1)
    key = {"instance": "a/b c", "shard": ""}
    registry.push(pushgateway.url + "/", "etl/daily", grouping_key=key)
    got = pushgateway.samples(job="etl/daily")
    assert value(got, "app_events_total", instance="a/b c") == 1


def test_namespace_applies_to_pushed_names(pushgateway: Pushgateway) -> None:
    """A namespaced registry pushes its prefixed names."""
    registry = PerfRegistry(namespace="etl")
    registry.count("rows", 4)
    registry.push(pushgateway.url, "ns")
    assert value(pushgateway.samples(job="ns"), "etl_app_events_total", name="rows") == 4


def test_conflicting_type_is_refused_with_the_gateways_reason(pushgateway: Pushgateway) -> None:
    """The gateway's 400 and its reason reach the caller as a PushError."""
    counting = PerfRegistry()
    Counter("things", "Things.", registry=counting.prometheus).inc()
    counting.push(pushgateway.url, "one")
    gauging = PerfRegistry()
    Gauge("things_total", "Things.", registry=gauging.prometheus).set(1)
    # Which of the two pushes the gateway names first varies between its runs.
    with pytest.raises(
        PushError, match=r"HTTP 400 .*things_total.*is not a (COUNTER|GAUGE)"
    ) as info:
        gauging.push(pushgateway.url, "two")
    assert info.value.status == 400
    assert info.value.url == pushgateway.url


def test_multiprocess_mode_pushes_the_merged_view(pushgateway: Pushgateway, tmp_path: Path) -> None:
    """With multi-worker mode on, a push carries every live worker's numbers, summed."""
    mine = PerfRegistry()
    mine.count("rows", 2)
    other = PerfRegistry()
    other.count("rows", 40)
    with live_process() as pid:
        write_worker(tmp_path, pid, other)
        merged = enable_multiprocess(mine, tmp_path, interval=3600)
        try:
            mine.push(pushgateway.url, "mp")
        finally:
            merged.close()
    assert value(pushgateway.samples(job="mp"), "app_events_total", name="rows") == 42


def test_registry_push_defaults_match_the_module() -> None:
    """PerfRegistry.push() and asgi_perf.export.push() share their defaults."""
    method = inspect.signature(PerfRegistry.push).parameters
    function = inspect.signature(push).parameters
    assert method["timeout"].default == function["timeout"].default == DEFAULT_TIMEOUT
    assert method["method"].default == function["method"].default == "put"


# -- authentication --------------------------------------------------------------------------------
def test_basic_auth(pushgateway_auth: Pushgateway) -> None:
    """Without credentials the push is refused (401); basic_auth= or user:pass@ in the URL pass."""
    registry = batch_registry()
    with pytest.raises(PushError, match="HTTP 401") as info:
        registry.push(pushgateway_auth.url, "auth")
    assert info.value.status == 401
    registry.push(pushgateway_auth.url, "auth", basic_auth=(USER, PASSWORD))
    with_userinfo = pushgateway_auth.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    registry.push(with_userinfo, "auth2")
    assert value(pushgateway_auth.samples(job="auth"), "files_read_total") == 3
    assert value(pushgateway_auth.samples(job="auth2"), "files_read_total") == 3


def test_wrong_password_error_does_not_show_it(pushgateway_auth: Pushgateway) -> None:
    """A refused push names the gateway without the credentials that were sent."""
    url = pushgateway_auth.url.replace("http://", f"http://{USER}:wrong-pw@")
    with pytest.raises(PushError) as info:
        push(PerfRegistry(), url, "auth")
    assert info.value.status == 401
    assert "wrong-pw" not in str(info.value)
    assert pushgateway_auth.url in str(info.value)


def test_custom_handler_is_used(pushgateway_auth: Pushgateway) -> None:
    """handler= takes a prometheus_client handler (here one adding the auth header itself)."""
    calls: list[str] = []

    def handler(url: str, method: str, timeout: float | None, headers: Any, data: bytes) -> Any:
        calls.append(method)
        token = __import__("base64").b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return default_handler(
            url, method, timeout, [*headers, ("Authorization", f"Basic {token}")], data
        )

    registry = batch_registry()
    registry.push(pushgateway_auth.url, "handled", handler=handler, method="add")
    assert calls == ["POST"]
    assert value(pushgateway_auth.samples(job="handled"), "files_read_total") == 3


# -- failures ----------------------------------------------------------------------------------------
def test_gateway_down_raises_a_clear_error(closed_port: str) -> None:
    """An explicit push to a closed port raises PushError naming the gateway and the cause."""
    with pytest.raises(PushError, match=r"http://127\.0\.0\.1:\d+ .*refused") as info:
        push(PerfRegistry(), closed_port, "down", grouping_key={"instance": "x"})
    assert info.value.status is None
    assert isinstance(info.value, OSError)
    with pytest.raises(PushError, match="refused"):
        delete(closed_port, "down")


def test_unresponsive_gateway_times_out(silent_port: str) -> None:
    """A gateway that never answers fails the push after ``timeout`` seconds."""
    with pytest.raises(PushError, match="timed out"):
        push(PerfRegistry(), silent_port, "slow", timeout=0.2)


BAD_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"gateway": ""}, ERR_GATEWAY.format("")),
    ({"gateway": 9091}, ERR_GATEWAY.format(int)),
    ({"gateway": b"http://user:s3cret@gw:9091"}, ERR_GATEWAY.format(bytes)),
    ({"gateway": "ftp://gw:21"}, ERR_GATEWAY.format("ftp://gw:21")),
    ({"gateway": "http://"}, ERR_GATEWAY.format("http://")),
    ({"gateway": "gw:99999"}, ERR_GATEWAY.format("gw:99999")),
    ({"gateway": "http://gw:9091/?x=1"}, ERR_GATEWAY.format("http://gw:9091/?x=1")),
    ({"gateway": "http://u@gw:9091"}, ERR_BASIC),
    ({"job": ""}, ERR_JOB.format("")),
    ({"job": None}, ERR_JOB.format(None)),
    ({"method": "delete"}, ERR_METHOD.format("delete")),
    ({"grouping_key": {"job": "x"}}, ERR_GROUPING_KEY.format(("job", "x"))),
    ({"grouping_key": {"__name__": "x"}}, ERR_GROUPING_KEY.format(("__name__", "x"))),
    ({"grouping_key": {"a-b": "x"}}, ERR_GROUPING_KEY.format(("a-b", "x"))),
    ({"grouping_key": {"n": 1}}, ERR_GROUPING_KEY.format(("n", 1))),
    ({"grouping_key": [("n", "1")]}, ERR_GROUPING_KEY.format([("n", "1")])),
    ({"timeout": 0}, ERR_TIMEOUT.format(0)),
    ({"timeout": True}, ERR_TIMEOUT.format(True)),
    ({"timeout": "5"}, ERR_TIMEOUT.format("5")),
    ({"timeout": float("inf")}, ERR_TIMEOUT.format(float("inf"))),
    ({"basic_auth": ("user", "")}, ERR_BASIC),
    ({"basic_auth": ["user", "pw"]}, ERR_BASIC),
    ({"handler": "not callable"}, ERR_HANDLER.format("not callable")),
    ({"basic_auth": ("u", "p"), "handler": default_handler}, ERR_AUTH_TWICE),
    ({"gateway": "http://u:p@gw:9091", "basic_auth": ("u", "p")}, ERR_AUTH_TWICE),
]


@pytest.mark.parametrize(("override", "message"), BAD_ARGUMENTS)
def test_bad_arguments_raise_value_error(override: dict[str, Any], message: str) -> None:
    """Every argument is checked before anything is sent, by push() and push_on_exit() alike."""
    args: dict[str, Any] = {"gateway": "gw:9091", "job": "j", **override}
    gateway, job = args.pop("gateway"), args.pop("job")
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        push(PerfRegistry(), gateway, job, **args)
    assert str(info.value) == message
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        push_on_exit(PerfRegistry(), gateway, job, **args)
    assert str(info.value) == message


BAD_GATEWAYS_WITH_PASSWORD = [
    ("ftp://user:s3cret@gw", "ftp://***@gw"),
    ("user:s3cret@pushgateway:9091?x=1", "***@pushgateway:9091?x=1"),
    ("user:s3cret@pushgateway:99999", "***@pushgateway:99999"),
    ("http://user:p@s3cret@pushgateway:9091?x=1", "http://***@pushgateway:9091?x=1"),
    ("http://us/er:s3cret@pushgateway:9091/x?y", "http://***@pushgateway:9091/x?y"),
    ("http://us/er:s3cret@pushgateway:9091", "http://***@pushgateway:9091"),
    ("http://us?er:s3cret@pushgateway:9091", "http://***@pushgateway:9091"),
    ("http://[user:s3cret@pushgateway:9091", "http://***@pushgateway:9091"),
    ("http://user:s3cret@gw:9091/#x@y", "http://***@y"),
]


@pytest.mark.parametrize(("gateway", "shown"), BAD_GATEWAYS_WITH_PASSWORD)
def test_bad_gateway_message_hides_the_password(gateway: str, shown: str) -> None:
    """A malformed gateway URL is reported with nothing that precedes its last ``@``."""
    for build in (push, push_on_exit):
        with pytest.raises(ValueError, match=re.escape(ERR_GATEWAY.format(shown))) as info:
            build(PerfRegistry(), gateway, "j")
        assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    "userinfo", ["user:s3cret", "us%2Fer:s3cret", "user:p@s3cret", "user:s3cret:more"]
)
@pytest.mark.parametrize("scheme", ["", "http://"])
def test_lost_push_logs_never_show_the_password(
    closed_port: str, caplog: pytest.LogCaptureFixture, scheme: str, userinfo: str
) -> None:
    """Accepted credentials of any shape stay out of the log line of a lost push."""
    pusher = push_on_exit(PerfRegistry(), f"{scheme}{userinfo}@{closed_port}", "down")
    with caplog.at_level(logging.WARNING, logger="asgi_perf.push"), pusher:
        pass
    assert f"http://{closed_port} " in caplog.text
    assert "s3cret" not in caplog.text


def test_push_needs_a_perf_registry() -> None:
    """Passing anything but a PerfRegistry is a configuration error."""
    thing = object()
    message = re.escape(ERR_REGISTRY.format(thing))
    with pytest.raises(ValueError, match=message):
        push(thing, "gw:9091", "j")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        push_on_exit(thing, "gw:9091", "j")  # type: ignore[arg-type]


# -- push on exit --------------------------------------------------------------------------------------
def test_failed_job_is_pushed_and_its_exception_propagates(pushgateway: Pushgateway) -> None:
    """A job that raises: its numbers and batch_job_success 0 are pushed; the error goes on."""
    registry = PerfRegistry()

    def job() -> None:
        with push_on_exit(registry, pushgateway.url, "raises"):
            registry.count("rows", 3)
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        job()
    got = pushgateway.samples(job="raises")
    assert value(got, "app_events_total", name="rows") == 3
    assert value(got, "batch_job_success") == 0
    duration = value(got, "batch_job_duration_seconds")
    assert duration is not None
    assert duration >= 0
    assert value(got, "batch_job_last_success_timestamp_seconds") is None


def test_failure_after_success_keeps_the_last_success_time(pushgateway: Pushgateway) -> None:
    """With the default ``add``, a failed run leaves the previous success time in place."""
    ok = PerfRegistry()
    with push_on_exit(ok, pushgateway.url, "cron", grouping_key={"instance": "h"}):
        pass
    succeeded = pushgateway.samples(job="cron")
    stamp = value(succeeded, "batch_job_last_success_timestamp_seconds")
    assert stamp is not None
    assert stamp > 0
    assert value(succeeded, "batch_job_success") == 1
    failing = PerfRegistry()
    with (
        pytest.raises(ValueError, match="bad row"),
        push_on_exit(failing, pushgateway.url, "cron", grouping_key={"instance": "h"}),
    ):
        raise ValueError("bad row")
    after = pushgateway.samples(job="cron")
    assert value(after, "batch_job_success") == 0
    assert value(after, "batch_job_last_success_timestamp_seconds") == stamp


@pytest.mark.parametrize(
    ("exc", "success"),
    [
        (SystemExit(0), 1),
        (SystemExit(None), 1),
        (SystemExit(3), 0),
        (SystemExit("fatal: no input"), 0),
        (KeyboardInterrupt(), 0),
    ],
)
def test_exit_paths_are_classified(
    pushgateway: Pushgateway, exc: BaseException, success: int
) -> None:
    """sys.exit(0) is a success; a non-zero exit or an interrupt is a failure; all propagate."""
    registry = PerfRegistry()
    with pytest.raises(type(exc)), push_on_exit(registry, pushgateway.url, "exits"):
        raise exc
    assert value(pushgateway.samples(job="exits"), "batch_job_success") == success


def test_decorator_on_a_sync_function(pushgateway: Pushgateway) -> None:
    """@push_on_exit on main() pushes after every call and returns main's value."""
    registry = PerfRegistry()

    @push_on_exit(registry, pushgateway.url, "deco", method="put")
    def main(rows: int) -> int:
        registry.count("rows", rows)
        return rows * 2

    assert main(4) == 8
    assert main.__name__ == "main"
    assert value(pushgateway.samples(job="deco"), "app_events_total", name="rows") == 4
    assert main(1) == 2
    assert value(pushgateway.samples(job="deco"), "app_events_total", name="rows") == 5


def test_decorated_sync_function_that_raises(closed_port: str) -> None:
    """A sync main that raises records a failure and its exception propagates unchanged."""
    registry = PerfRegistry()

    @push_on_exit(registry, closed_port, "deco_raises")
    def main() -> None:
        raise FileNotFoundError("input.csv")

    with pytest.raises(FileNotFoundError, match=r"input\.csv"):
        main()
    assert registry.prometheus.get_sample_value("batch_job_success") == 0


@pytest.mark.anyio
async def test_decorator_on_an_async_function(pushgateway: Pushgateway) -> None:
    """An async main is awaited inside the block; its exception propagates after the push."""
    registry = PerfRegistry()

    @push_on_exit(registry, pushgateway.url, "adeco")
    async def main() -> None:
        registry.count("rows", 9)
        raise LookupError("missing input")

    with pytest.raises(LookupError):
        await main()
    got = pushgateway.samples(job="adeco")
    assert value(got, "app_events_total", name="rows") == 9
    assert value(got, "batch_job_success") == 0


def test_push_on_exit_never_raises_when_the_gateway_is_down(
    closed_port: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Gateway down: the job's own result stands, the loss is logged (no password) and counted."""
    registry = PerfRegistry()
    gateway = f"http://user:hunter2@{closed_port}"
    pusher = push_on_exit(registry, gateway, "down")
    with caplog.at_level(logging.WARNING, logger="asgi_perf.push"), pusher:
        registry.count("rows", 1)
    with (
        caplog.at_level(logging.WARNING, logger="asgi_perf.push"),
        pytest.raises(KeyError),
        pusher,
    ):
        raise KeyError("job error")
    lost = [r for r in caplog.records if r.name == "asgi_perf.push"]
    assert len(lost) == 2
    assert "refused" in lost[0].getMessage()
    assert f"http://{closed_port}" in lost[0].getMessage()
    assert "hunter2" not in caplog.text
    errors = registry.prometheus.get_sample_value(
        "asgi_perf_instrumentation_errors_total", {"component": "push"}
    )
    assert errors == 2


def test_finish_reports_whether_the_push_arrived(
    pushgateway: Pushgateway, closed_port: str
) -> None:
    """finish() returns True after a delivered push and False after a lost one."""
    registry = PerfRegistry()
    assert push_on_exit(registry, pushgateway.url, "fin").finish(0.0) is True
    assert push_on_exit(registry, closed_port, "fin").finish(0.0) is False


def recorded_durations(pusher: push_module.PushOnExit) -> list[float]:
    """The durations ``pusher`` records, in the order the runs end."""
    durations: list[float] = []
    record = pusher.outcome.record

    def spy(duration: float, succeeded: bool) -> None:
        durations.append(duration)
        record(duration, succeeded)

    pusher.outcome.record = spy  # type: ignore[method-assign]
    return durations


async def overlapping_runs(clock: FakeClock, run: Any) -> None:
    """Run A from t=0 to t=13 and run B from t=10 to t=30: B starts inside A and outlives it."""
    a_may_end, b_may_end = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(run(a_may_end))
    await asyncio.sleep(0)
    clock.now = 10.0
    b = asyncio.create_task(run(b_may_end))
    await asyncio.sleep(0)
    clock.now = 13.0
    a_may_end.set()
    await a
    clock.now = 30.0
    b_may_end.set()
    await b


@pytest.mark.parametrize("form", ["decorator", "with", "async with"])
def test_overlapping_runs_record_their_own_durations(closed_port: str, form: str) -> None:
    """Two overlapping runs of one pusher each record their own start-to-end time."""
    pusher = push_on_exit(PerfRegistry(), closed_port, "overlap")
    clock = pusher.clock = FakeClock()
    durations = recorded_durations(pusher)

    @pusher
    async def decorated(gate: asyncio.Event) -> None:
        await gate.wait()

    async def with_block(gate: asyncio.Event) -> None:
        with pusher:
            await gate.wait()

    async def async_with_block(gate: asyncio.Event) -> None:
        async with pusher:
            await gate.wait()

    forms = {"decorator": decorated, "with": with_block, "async with": async_with_block}
    asyncio.run(overlapping_runs(clock, forms[form]))
    assert durations == [13.0, 20.0]


def test_nested_blocks_and_threads_keep_their_own_start(closed_port: str) -> None:
    """Nested ``with`` blocks pair innermost-first; another thread's block is independent."""
    pusher = push_on_exit(PerfRegistry(), closed_port, "nested")
    clock = pusher.clock = FakeClock()
    durations = recorded_durations(pusher)
    inner_open, outer_may_end = threading.Event(), threading.Event()

    def other_thread() -> None:
        with pusher:
            inner_open.set()
            outer_may_end.wait()

    with pusher:
        clock.now = 1.0
        with pusher:
            clock.now = 3.0
        thread = threading.Thread(target=other_thread)
        thread.start()
        inner_open.wait()
        clock.now = 4.0
    clock.now = 9.0
    outer_may_end.set()
    thread.join()
    assert durations == [2.0, 4.0, 6.0]


def test_a_block_left_in_another_context_still_pushes(closed_port: str) -> None:
    """Entered in one task and left in another (an async fixture's setup and teardown, an exit
    stack closed elsewhere): the run is recorded from its start and the exit never raises."""
    pusher = push_on_exit(PerfRegistry(), closed_port, "elsewhere")
    clock = pusher.clock = FakeClock()
    durations = recorded_durations(pusher)

    async def main() -> None:
        clock.now = 5.0
        await asyncio.create_task(pusher.__aenter__())
        clock.now = 12.0
        await asyncio.create_task(pusher.__aexit__(None, None, None))

    asyncio.run(main())
    clock.now = 20.0
    contextvars.copy_context().run(pusher.__enter__)
    clock.now = 21.0
    pusher.__exit__(None, None, None)
    assert durations == [7.0, 1.0]
    assert pusher.outcome.succeeded


def errors_counted(registry: PerfRegistry) -> float | None:
    return registry.prometheus.get_sample_value(
        "asgi_perf_instrumentation_errors_total", {"component": "push"}
    )


@pytest.mark.parametrize("form", ["decorator", "async with"])
def test_async_push_does_not_block_the_event_loop(form: str) -> None:
    """While the push waits on a gateway that never answers, other tasks keep running."""
    registry = PerfRegistry()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        pusher = push_on_exit(registry, f"127.0.0.1:{server.getsockname()[1]}", "stuck", timeout=5)

        @pusher
        async def decorated() -> str:
            return "done"

        async def async_with_block() -> str:
            async with pusher:
                return "done"

        async def main() -> tuple[bool, str]:
            loop = asyncio.get_running_loop()
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            job = asyncio.create_task(decorated() if form == "decorator" else async_with_block())
            other = asyncio.create_task(ticker())
            # The loop accepts the push's connection, so the push is under way and waiting...
            accept = asyncio.ensure_future(loop.sock_accept(server))
            await asyncio.wait({accept, job}, return_when=asyncio.FIRST_COMPLETED)
            if not accept.done():  # the job ended (push included) before the loop could accept
                accept.cancel()
                other.cancel()
                return False, await job
            connection, _ = accept.result()
            with connection:
                # ...and another task makes progress meanwhile; the job has not ended yet.
                seen = ticks
                while ticks < seen + 100:
                    await asyncio.sleep(0)
                pushing = not job.done()
            # The gateway hangs up without an answer: the push fails, the job returns.
            result = await job
            other.cancel()
            return pushing, result

        pushing, result = asyncio.run(main())
    assert pushing
    assert result == "done"
    assert errors_counted(registry) == 1
    assert registry.prometheus.get_sample_value("batch_job_success") == 1


@pytest.mark.parametrize("form", ["decorator", "async with"])
def test_cancelled_async_job_is_pushed_and_stays_cancelled(closed_port: str, form: str) -> None:
    """A cancelled async job records a failure, attempts the push and is still cancelled."""
    registry = PerfRegistry()
    pusher = push_on_exit(registry, closed_port, "cancelled")

    @pusher
    async def decorated(started: asyncio.Event) -> None:
        started.set()
        await asyncio.Event().wait()

    async def async_with_block(started: asyncio.Event) -> None:
        async with pusher:
            started.set()
            await asyncio.Event().wait()

    async def main() -> None:
        started = asyncio.Event()
        job = decorated if form == "decorator" else async_with_block
        task = asyncio.create_task(job(started))
        waiting = asyncio.ensure_future(started.wait())
        await asyncio.wait({waiting, task}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert registry.prometheus.get_sample_value("batch_job_success") == 0
    assert errors_counted(registry) == 1


def test_afinish_never_raises_when_no_thread_can_push(
    closed_port: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If the push cannot even be handed to a thread (shutdown), it is logged and counted."""
    registry = PerfRegistry()
    pusher = push_on_exit(registry, closed_port, "no_thread")

    async def no_thread(*args: Any) -> bool:
        raise RuntimeError("cannot schedule new futures after shutdown")

    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    with caplog.at_level(logging.WARNING, logger="asgi_perf.push"):
        assert asyncio.run(pusher.afinish(0.0)) is False
    assert "cannot schedule new futures" in caplog.text
    assert errors_counted(registry) == 1


def test_outcome_is_exported_by_the_registry_too(registry: PerfRegistry) -> None:
    """The outcome gauges appear in the registry after a run, not before (nothing to report)."""
    pusher = push_on_exit(registry, f"127.0.0.1:{free_port()}", "x", timeout=1)
    assert registry.prometheus.get_sample_value("batch_job_success") is None
    pusher.finish(0.0)
    assert registry.prometheus.get_sample_value("batch_job_success") == 1
    assert push_on_exit(registry, "gw:1", "y").outcome is pusher.outcome


BATCH_SCRIPT = """
import sys
from asgi_perf import PerfRegistry
from asgi_perf.export import push_on_exit

registry = PerfRegistry()

@push_on_exit(registry, sys.argv[1], "script", grouping_key={"instance": "ci"})
def main() -> None:
    registry.count("rows", 12)
    if sys.argv[2] == "fail":
        sys.exit(3)

main()
print("done")
"""


def run_script(tmp_path: Path, gateway: str, mode: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "batch.py"
    script.write_text(textwrap.dedent(BATCH_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(script), gateway, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_batch_script_pushes_at_exit(pushgateway: Pushgateway, tmp_path: Path) -> None:
    """A real script: a success pushes and prints; sys.exit(3) still pushes and exits 3."""
    ok = run_script(tmp_path, pushgateway.url, "ok")
    assert (ok.returncode, ok.stdout) == (0, "done\n"), ok.stderr
    got = pushgateway.samples(job="script", instance="ci")
    assert value(got, "app_events_total", name="rows") == 12
    assert value(got, "batch_job_success") == 1
    failed = run_script(tmp_path, pushgateway.url, "fail")
    assert (failed.returncode, failed.stdout) == (3, ""), failed.stderr
    assert value(pushgateway.samples(job="script"), "batch_job_success") == 0


def test_batch_script_with_gateway_down_keeps_its_exit_code(
    closed_port: str, tmp_path: Path
) -> None:
    """Gateway down: the script's output and exit code are its own; one warning, no traceback."""
    ok = run_script(tmp_path, closed_port, "ok")
    assert (ok.returncode, ok.stdout) == (0, "done\n")
    assert "push at the end of the job was lost" in ok.stderr
    assert "Traceback" not in ok.stderr
    failed = run_script(tmp_path, closed_port, "fail")
    assert failed.returncode == 3


def test_module_exports() -> None:
    """The Pushgateway module's ``__all__`` lists exactly its public names."""
    public = {
        name
        for name, obj in vars(push_module).items()
        if not name.startswith("_")
        and getattr(obj, "__module__", push_module.__name__) == push_module.__name__
        and not inspect.ismodule(obj)
        and name not in {"annotations", "logger", "P", "R", "Handler", "COMPONENT"}
    }
    assert public == set(push_module.__all__)


EXAMPLE = ROOT / "examples" / "batch_job_push.py"


def test_example_batch_job(pushgateway: Pushgateway) -> None:
    """``examples/batch_job_push.py`` works as documented: a run, then a failed run (exit 1)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(EXAMPLE), "--gateway", pushgateway.url, "--rows", "100"]
    ok = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert (ok.returncode, ok.stdout) == (0, "imported 100 rows\n"), ok.stderr
    instance = socket.gethostname()
    got = pushgateway.samples(job="nightly_import", instance=instance)
    assert value(got, "app_events_total", name="rows_imported") == 100
    assert value(got, "app_timer_duration_seconds_count", name="import_row") == 100
    assert value(got, "cache_requests_total", cache="customers", result="miss") == 40
    assert value(got, "cache_requests_total", cache="customers", result="hit") == 60
    assert value(got, "batch_job_success") == 1
    stamp = value(got, "batch_job_last_success_timestamp_seconds")
    failed = subprocess.run(
        [*command, "--fail"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert failed.returncode == 1
    assert "upstream refused the import" in failed.stderr
    got = pushgateway.samples(job="nightly_import", instance=instance)
    assert value(got, "app_events_total", name="rows_imported") == 50
    assert value(got, "batch_job_success") == 0
    assert value(got, "batch_job_last_success_timestamp_seconds") == stamp

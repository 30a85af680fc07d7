"""Deadlines and the real-time route, end to end: nats-server, the services, the SDK, the emulator."""

import asyncio
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest

from batchbus.client import BatchbusClient
from batchbus.emulator.config import FaultRule
from batchbus.emulator.prompt import params_hash
from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.services.intake.batch_history import BatchHistoryFollower
from batchbus.services.intake.routing import BatchHistory
from batchbus.shared import subjects
from batchbus.shared.models import BatchEvent, Result
from batchbus.shared.publishing import publish_event
from tests.integration.helpers import gather_results, results_of, stored_count, ticket

pytestmark = pytest.mark.nats


@pytest.fixture(scope="module")
def pipeline_overrides() -> dict[str, str]:
    return {
        # Other modules leave quick batches in the shared events stream; with a threshold
        # above their number, intake judges from no history: the API's 24 h window.
        "INTAKE_ROUTE_MIN_HISTORY": "100000",
        "NOTIFIER_ACK_WAIT_SECONDS": "4",  # a killed notifier's task comes back in seconds
    }


def task(tenant: str, name: str, **fields: Any) -> dict[str, Any]:
    """A task whose params are unique to this tenant and name, so calls can be told apart."""
    body = ticket(0)
    body["task_id"] = name
    body["params"]["messages"][0]["content"] = f"{tenant} {name}: my parcel is late"
    return {**body, **fields}


def in_(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def calls(emulator: EmulatorHandle, body: dict[str, Any]) -> int:
    """How many `POST /v1/messages` calls with these params the emulator answered."""
    digest = params_hash(body["params"])
    return sum(m["params_hash"] == digest for m in emulator.state.messages())


def batched(emulator: EmulatorHandle, body: dict[str, Any]) -> int:
    """How many batch creates carried these params."""
    digest = params_hash(body["params"])
    return sum(r["params_hash"] == digest for c in emulator.state.creates() for r in c["requests"])


def metric(url: str, series: str) -> float:
    """One labelled series (e.g. `name{a="x",b="y"}`) of a service's /metrics, 0 if absent."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(series + " ")]
    return sum(values)


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Polls `condition` until it holds; fails after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)



def assert_realtime(result: Result, attempts: int = 1) -> None:
    assert (result.status, result.route, result.batch_id) == ("succeeded", "realtime", None)
    assert result.attempts == attempts
    assert result.usage and result.usage.output_tokens > 0
    assert result.cost and result.cost.batch_usd == result.cost.realtime_usd > 0
    assert result.cost.saved_usd == 0


async def test_a_near_deadline_goes_real_time_and_a_far_one_by_batch(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    near = task(tenant, "near", deadline=in_(timedelta(hours=1)))
    far = task(tenant, "far", deadline=in_(timedelta(days=3)))
    plain = task(tenant, "plain")
    results = await results_of(nats_server.url, tenant, [near, far, plain])
    assert_realtime(results["near"])
    assert results["near"].metadata == near["metadata"]
    for name in ("far", "plain"):
        assert (results[name].status, results[name].route) == ("succeeded", "batch")
    # The real-time request reached /v1/messages once and no batch; the others only a batch.
    assert (calls(emulator, near), batched(emulator, near)) == (1, 0)
    assert (calls(emulator, far), batched(emulator, far)) == (0, 1)
    intake = pipeline.services["intake"].metrics_url
    assert metric(intake, 'batchbus_route_decisions_total{reason="deadline_near",route="realtime"}') >= 1
    assert metric(intake, 'batchbus_route_decisions_total{reason="deadline_far",route="batch"}') >= 1
    assert metric(intake, "batchbus_batch_path_estimate_seconds") >= 24 * 3600


async def test_a_requested_route_is_kept_whatever_the_deadline(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    fast = task(tenant, "fast", route="realtime")
    slow = task(tenant, "slow", route="batch", deadline=in_(timedelta(minutes=5)))
    results = await results_of(nats_server.url, tenant, [fast, slow])
    assert_realtime(results["fast"])
    assert (results["slow"].status, results["slow"].route) == ("succeeded", "batch")
    assert (calls(emulator, fast), batched(emulator, fast)) == (1, 0)
    assert (calls(emulator, slow), batched(emulator, slow)) == (0, 1)


async def test_a_passed_deadline_is_rejected_and_does_not_claim_the_id(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    late = task(tenant, "late", deadline=in_(-timedelta(minutes=1)))
    async with BatchbusClient(nats_server.url, tenant) as client, asyncio.timeout(60):
        rejected = await client.submit(late)
        assert rejected.status == "rejected" and rejected.error is not None
        assert "has already passed" in rejected.error.message
        fixed = await client.submit({**late, "deadline": in_(timedelta(hours=1))})
        assert_realtime(fixed)
        # Sent again once its id is claimed, a passed deadline is a duplicate: no new result.
        intake = pipeline.services["intake"].metrics_url
        seen = metric(intake, "batchbus_tasks_deduplicated_total")
        await client.publish(late)
        await until(lambda: metric(intake, "batchbus_tasks_deduplicated_total") > seen)
    assert await stored_count(nats_server.url, subjects.results(tenant, "late")) == 2


async def test_a_transient_error_is_retried_and_a_permanent_one_is_final(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    flaky = task(tenant, "flaky", route="realtime")
    emulator.configure(faults=[FaultRule(operation="messages", status=529, times=1)])
    try:
        (result,) = (await results_of(nats_server.url, tenant, [flaky])).values()
    finally:
        emulator.configure(faults=[])
    assert_realtime(result, attempts=2)
    assert calls(emulator, flaky) == 1  # the 529 was not answered with a message
    notifier = pipeline.services["notifier"].metrics_url
    assert metric(notifier, 'batchbus_realtime_calls_total{outcome="overloaded"}') >= 1

    other = tenant + "-b"  # its results alone
    # Retired by the API after intake last read the Models API: intake lets it through, and
    # the API's answer is final.
    gone = task(other, "gone", route="realtime")
    gone["params"]["model"] = "claude-opus-4-7"
    emulator.set_model("claude-opus-4-7", lifecycle="retired")
    try:
        (result,) = (await results_of(nats_server.url, other, [gone])).values()
    finally:
        emulator.set_model("claude-opus-4-7", lifecycle="active")
    assert (result.status, result.route, result.attempts) == ("errored", "realtime", 1)
    assert result.error is not None and result.error.type == "not_found_error"
    assert result.cost is None and result.usage is None


async def test_a_cancel_during_a_real_time_back_off_ends_the_task_canceled(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    busy = task(tenant, "busy", route="realtime")
    # A 529 asking for 6 s: the task waits that long before its second call.
    emulator.configure(faults=[FaultRule(operation="messages", status=529, retry_after=6)])
    try:
        async with BatchbusClient(nats_server.url, tenant) as client:
            await client.publish(busy)
            await until(lambda: emulator.state.stats()["faults_remaining"] == [0])
            await client.cancel("busy")
            found = await gather_results(client, 1)
    finally:
        emulator.configure(faults=[])
    (result,) = found["busy"]
    assert (result.status, result.route, result.attempts) == ("canceled", "realtime", 1)
    assert result.error is not None and result.error.type == "canceled"
    assert calls(emulator, busy) == 0


async def test_a_call_interrupted_by_a_crash_is_counted_and_made_once_more(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    slow = task(tenant, "slow", route="realtime")
    notifier = pipeline.services["notifier"]
    before = emulator.state.stats()["calls"]["messages"]
    emulator.configure(faults=[FaultRule(operation="messages", delay_seconds=3.0, times=1)])
    try:
        async with BatchbusClient(nats_server.url, tenant) as client:
            await client.publish(slow)
            await until(lambda: emulator.state.stats()["faults_remaining"] == [0])  # the call
            notifier.kill()  # is under way when its worker dies
            notifier.start()
            await asyncio.to_thread(notifier.wait_ready)
            found = await gather_results(client, 1)
    finally:
        emulator.configure(faults=[])
    (result,) = found["slow"]
    assert_realtime(result, attempts=2)
    # The interrupted call reached the API and may be billed: made once more, and counted.
    assert emulator.state.stats()["calls"]["messages"] - before == 2
    assert metric(notifier.metrics_url, 'batchbus_realtime_calls_total{outcome="interrupted"}') == 1


async def test_intake_learns_completion_times_from_ended_events(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        created = datetime.now(UTC) - timedelta(hours=1)
        ids = [f"msgbatch_history_{i}_{created.timestamp():.0f}" for i in range(3)]

        async def ended(batch_id: str, seconds: float) -> None:
            await publish_event(js, BatchEvent(
                batch_id=batch_id, event="ended", processing_status="ended",
                request_counts={}, created_at=created,
                ended_at=created + timedelta(seconds=seconds)), tenants=["acme"])

        for i, batch_id in enumerate(ids[:2]):
            await ended(batch_id, 1000.0 + i)
        follower = BatchHistoryFollower(js, BatchHistory())
        await follower.load()
        durations = follower.history.durations(datetime.now(UTC))
        assert {1000.0, 1001.0} <= set(durations)

        following = asyncio.create_task(follower.follow())
        try:
            await ended(ids[2], 1002.0)
            await until(lambda: 1002.0 in follower.history.durations(datetime.now(UTC)))
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
    finally:
        await nc.close()

"""The back half survives kills: no result lost, none duplicated."""

import asyncio

import pytest

from batchbus.client import BatchbusClient
from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.shared import subjects
from tests.integration.helpers import (
    assert_submitted_once,
    gather_results,
    metric_total,
    stored_count,
    ticket,
)

pytestmark = [pytest.mark.nats, pytest.mark.fault]


async def test_a_poller_killed_with_batches_in_flight_loses_nothing(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    emulator.configure(processing_seconds=3.0)
    poller = pipeline.services["poller"]
    try:
        before = len(emulator.state.creates())
        tasks = [ticket(i) for i in range(300)]
        async with BatchbusClient(nats_server.url, tenant) as client:
            await client.publish_many(tasks)
            async with asyncio.timeout(30):
                while len(emulator.state.creates()) <= before:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            poller.kill()  # its lease stays held until it runs out
            poller.start()
            results = await gather_results(client, len(tasks), timeout=90)
    finally:
        emulator.configure(processing_seconds=0.5)
    assert all(len(r) == 1 and r[0].status == "succeeded" for r in results.values())
    assert await stored_count(nats_server.url, subjects.results_of(tenant)) == len(tasks)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_notifier_killed_halfway_through_a_20000_line_file_resumes_exactly(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    batcher, notifier = pipeline.services["batcher"], pipeline.services["notifier"]
    batcher.stop()  # one batch of exactly 20,000 requests: flushed by count
    batcher.start(BATCHER_MAX_REQUESTS="20000", BATCHER_MAX_WAIT_SECONDS="120")
    await asyncio.to_thread(batcher.wait_ready)
    before = len(emulator.state.creates())
    tasks = [ticket(i) for i in range(20_000)]
    try:
        async with BatchbusClient(nats_server.url, tenant) as client:
            await client.publish_many(tasks)
            seen: set[str] = set()
            async with asyncio.timeout(180):
                async for result in client.results():
                    seen.add(result.task_id)
                    if len(seen) >= 8000:  # well into the file: kill it mid-stream
                        break
            notifier.kill()
            notifier.start()
            results = await gather_results(client, len(tasks), timeout=240)
    finally:
        batcher.stop()
        batcher.start()
        await asyncio.to_thread(batcher.wait_ready)
    assert [c["request_count"] for c in emulator.state.creates()[before:]] == [20_000]
    assert all(len(r) == 1 and r[0].status == "succeeded" for r in results.values())
    assert await stored_count(nats_server.url, subjects.results_of(tenant)) == len(tasks)
    assert_submitted_once(emulator, tenant, [str(t["task_id"]) for t in tasks])


async def test_two_pollers_never_poll_at_once_and_a_standby_takes_over(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    first = pipeline.services["poller"]
    second = pipeline.add("poller-2", "poller")
    try:
        await asyncio.to_thread(second.wait_ready)
        tasks = [ticket(i) for i in range(100)]
        await run_and_check(nats_server.url, tenant, tasks)
        polls = [await poll_calls(s.metrics_url) for s in (first, second)]
        assert sorted(p > 0 for p in polls) == [False, True]  # exactly one of them polled
        active = first if polls[0] else second
        active.kill()  # the standby takes over once the lease runs out
        await run_and_check(nats_server.url, f"{tenant}-b", [ticket(i) for i in range(100)])
        standby = second if active is first else first
        assert await poll_calls(standby.metrics_url) > 0
    finally:
        for service in (first, second):
            service.stop()
        del pipeline.services["poller-2"]
        first.start()
        await asyncio.to_thread(first.wait_ready)


async def run_and_check(url: str, tenant: str, tasks: list[dict[str, object]]) -> None:
    async with BatchbusClient(url, tenant) as client:
        await client.publish_many(tasks)
        results = await gather_results(client, len(tasks), timeout=90)
    assert all(len(r) == 1 and r[0].status == "succeeded" for r in results.values())


async def poll_calls(metrics_url: str) -> float:
    return await asyncio.to_thread(metric_total, metrics_url, "batchbus_poll_calls_total")

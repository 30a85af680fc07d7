"""The batcher never loses a task and never pays twice: kills, API faults, replicas, limits."""

import asyncio
import json
import random
import urllib.request

import pytest

from batchbus.client import BatchbusClient
from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from tests.integration.helpers import assert_submitted_once, gather_results, ticket

pytestmark = [pytest.mark.nats, pytest.mark.fault]


async def run_tasks(url: str, tenant: str, tasks: list[dict[str, object]],
                    timeout: float = 90.0) -> None:
    """Publishes `tasks` and asserts each ends `succeeded` with exactly one result."""
    async with BatchbusClient(url, tenant) as client:
        await client.publish_many(tasks)
        results = await gather_results(client, len(tasks), timeout=timeout)
    assert sorted(results) == sorted(str(t["task_id"]) for t in tasks)
    assert all(len(r) == 1 and r[0].status == "succeeded" for r in results.values())


@pytest.mark.parametrize("step", ["after_intent", "after_create", "after_record"])
async def test_a_batcher_killed_at_each_step_loses_nothing_and_pays_once(
        step: str, pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    batcher = pipeline.services["batcher"]
    batcher.stop()
    batcher.start(BATCHBUS_FAILPOINTS=f"batcher.{step}")
    tasks = [ticket(i) for i in range(37)]
    async with BatchbusClient(nats_server.url, tenant) as client:
        await client.publish_many(tasks)
        assert await asyncio.to_thread(batcher.wait_exit, 30) == -9  # SIGKILLed at the step
        batcher.start()
        results = await gather_results(client, len(tasks), timeout=90)
    assert all(len(r) == 1 and r[0].status == "succeeded" for r in results.values())
    assert all(r[0].attempts == 1 for r in results.values())
    assert_submitted_once(emulator, tenant, [str(t["task_id"]) for t in tasks])


@pytest.mark.parametrize("fault", [
    {"status": 500, "after_create": True},
    {"status": 529, "after_create": True},
    {"delay_seconds": 4.0, "after_create": True},  # the response never comes in time
])
async def test_a_create_accepted_but_answered_badly_is_adopted_not_repeated(
        fault: dict[str, object], pipeline: Pipeline, emulator: EmulatorHandle,
        nats_server: NatsServer, tenant: str) -> None:
    emulator.configure(faults=[{"operation": "create", "times": 1, **fault}])
    tasks = [ticket(i) for i in range(23)]
    await run_tasks(nats_server.url, tenant, tasks)
    assert_submitted_once(emulator, tenant, [str(t["task_id"]) for t in tasks])
    assert emulator.state.stats()["faults_remaining"] == [0]
    emulator.configure(faults=[])


async def test_a_429_storm_delays_but_loses_and_rejects_nothing(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    emulator.configure(faults=[
        {"operation": "create", "status": 429, "times": 6, "retry_after_ms": 50},
        {"operation": "create", "status": 429, "times": 2, "spend_limit": True},
        {"operation": "create", "status": 503, "times": 1},
    ])
    tasks = [ticket(i) for i in range(200)]
    await run_tasks(nats_server.url, tenant, tasks)
    assert emulator.state.stats()["faults_remaining"] == [0, 0, 0]
    assert_submitted_once(emulator, tenant, [str(t["task_id"]) for t in tasks])
    emulator.configure(faults=[])


async def test_two_batcher_replicas_put_each_attempt_in_exactly_one_batch(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    second = pipeline.add("batcher-2", "batcher")
    try:
        await asyncio.to_thread(second.wait_ready)
        tasks = [ticket(i) for i in range(5000)]
        await run_tasks(nats_server.url, tenant, tasks, timeout=180)
    finally:
        second.stop()
        del pipeline.services["batcher-2"]
    assert_submitted_once(emulator, tenant, [str(t["task_id"]) for t in tasks])


async def test_batches_respect_the_request_and_byte_limits(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    batcher = pipeline.services["batcher"]
    batcher.stop()
    limit_bytes = 2 * 1024 * 1024
    batcher.start(BATCHER_MAX_REQUESTS="50", BATCHER_MAX_BYTES=str(limit_bytes))
    await asyncio.to_thread(batcher.wait_ready)
    big = [ticket(i, system="policy text " * 5000) for i in range(40)]  # ~60 KB each
    small = [ticket(i) for i in range(40, 160)]
    assert sum(len(json.dumps(t).encode()) for t in big) > limit_bytes  # must split on bytes
    try:
        before = len(emulator.state.creates())
        await run_tasks(nats_server.url, tenant, big + small)
        creates = emulator.state.creates()[before:]
        metrics = await asyncio.to_thread(
            lambda: urllib.request.urlopen(batcher.metrics_url).read().decode())
    finally:
        batcher.stop()
        batcher.start()
        await asyncio.to_thread(batcher.wait_ready)
    assert creates and max(c["request_count"] for c in creates) <= 50
    assert max(c["body_bytes"] for c in creates) <= limit_bytes
    assert sum(c["request_count"] for c in creates) == 160
    assert_submitted_once(emulator, tenant, [str(t["task_id"]) for t in big + small])
    assert 'batchbus_batch_flushes_total{reason="bytes"}' in metrics


async def test_a_batcher_killed_at_a_random_moment_mid_run_pays_once(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    """Also catches stale redeliveries: copies that reach the client after their ack."""
    batcher = pipeline.services["batcher"]
    before = len(emulator.state.creates())
    tasks = [ticket(i) for i in range(5000)]
    async with BatchbusClient(nats_server.url, tenant) as client:
        publishing = asyncio.create_task(client.publish_many(tasks))
        deadline = asyncio.get_running_loop().time() + 60
        while len(emulator.state.creates()) <= before:  # noqa: ASYNC110 - polls the emulator
            assert asyncio.get_running_loop().time() < deadline, "no batch was created"
            await asyncio.sleep(0.02)
        await asyncio.sleep(random.uniform(0.0, 1.0))  # the random moment
        batcher.kill()
        batcher.start()
        await publishing
        results = await gather_results(client, len(tasks), timeout=180)
    assert all(len(r) == 1 and r[0].status == "succeeded" for r in results.values())
    assert_submitted_once(emulator, tenant, [str(t["task_id"]) for t in tasks])

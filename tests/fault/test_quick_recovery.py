"""With the default timeouts (ack waits of 30 s, stale intents after 300 s), a batcher or
notifier SIGKILLed mid-batch and restarted at once has every task and result of the
interrupted batch out within 60 s of its restart: a dead run's intent does not wait to be
stale, and held messages come back after the short ack wait."""

import asyncio
import time
from typing import Any

import pytest

from batchbus.client import BatchbusClient
from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline, Service
from tests.integration.helpers import assert_submitted_once, gather_results, ticket

pytestmark = [pytest.mark.nats, pytest.mark.fault]

RECOVERY_BOUND = 60.0  # seconds from the restart


async def restarted_and_done(service: Service, client: BatchbusClient, tasks: list[Any],
                             emulator: EmulatorHandle, tenant: str) -> None:
    """Starts `service` again and checks every task's one result comes within the bound of
    the restart, each succeeded and submitted once."""
    service.start()
    restarted = time.monotonic()
    results = await gather_results(client, len(tasks), timeout=RECOVERY_BOUND)
    assert time.monotonic() - restarted < RECOVERY_BOUND
    assert all(len(r) == 1 and r[0].status == "succeeded" for r in results.values())
    assert_submitted_once(emulator, tenant, [str(t["task_id"]) for t in tasks])


@pytest.fixture(scope="module")
def pipeline_overrides() -> dict[str, str]:
    # The defaults, where the shared fixture shortens them; the settle time after a create in
    # doubt (30 s by default) shortened, as the other tests do, to keep this test short.
    return {"BATCHER_DOUBT_SETTLE_SECONDS": "3"}


async def test_a_batcher_killed_after_its_intent_is_settled_within_a_minute(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    batcher = pipeline.services["batcher"]
    batcher.stop()
    batcher.start(BATCHBUS_FAILPOINTS="batcher.after_intent")
    tasks = [ticket(i) for i in range(29)]
    async with BatchbusClient(nats_server.url, tenant) as client:
        await client.publish_many(tasks)
        assert await asyncio.to_thread(batcher.wait_exit, 30) == -9  # killed, intent written
        await restarted_and_done(batcher, client, tasks, emulator, tenant)


async def test_a_notifier_killed_mid_delivery_resumes_within_a_minute(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    notifier = pipeline.services["notifier"]
    tasks = [ticket(i) for i in range(3000)]
    async with BatchbusClient(nats_server.url, tenant) as client:
        await client.publish_many(tasks)
        seen: set[str] = set()
        async with asyncio.timeout(120):
            async for result in client.results():
                seen.add(result.task_id)
                if len(seen) >= 100:  # delivering: kill it mid-batch
                    break
        notifier.kill()
        await restarted_and_done(notifier, client, tasks, emulator, tenant)

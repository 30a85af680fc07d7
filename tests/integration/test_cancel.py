"""Cancelling a task on `batchbus.cancel.<tenant>` gives it a final `canceled` result."""

import asyncio

import nats.js.errors
import pytest

from batchbus.client import BatchbusClient
from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.services.batcher.batching import custom_id
from batchbus.shared import subjects
from tests.integration.helpers import gather_results, submissions, ticket

pytestmark = pytest.mark.nats


async def test_a_task_canceled_before_it_arrives_is_never_submitted(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    async with BatchbusClient(nats_server.url, tenant) as client:
        await client.cancel("not a valid id")  # ignored, and nothing breaks
        await client.cancel("ticket-00001")
        cancels = await client.nc.jetstream().key_value(subjects.KV_CANCELS)
        async with asyncio.timeout(30):  # the cancel is recorded before the task comes
            while True:
                try:
                    await cancels.get(subjects.task_key(tenant, "ticket-00001"))
                    break
                except nats.js.errors.NotFoundError:
                    await asyncio.sleep(0.05)
        await client.publish_many([ticket(1), ticket(2)])
        results = await gather_results(client, 2)
    (first,), (second,) = results["ticket-00001"], results["ticket-00002"]
    assert (first.status, first.attempts, first.batch_id) == ("canceled", 0, None)
    assert first.error is not None and first.error.type == "canceled"
    assert second.status == "succeeded"
    assert submissions(emulator)[custom_id(tenant, "ticket-00001", 1)] == 0


async def test_a_task_canceled_while_its_batch_runs_ends_canceled_with_what_it_cost(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    emulator.configure(processing_seconds=4.0)
    try:
        async with BatchbusClient(nats_server.url, tenant) as client:
            await client.publish_many([ticket(1), ticket(2)])
            wanted = custom_id(tenant, "ticket-00001", 1)
            async with asyncio.timeout(30):
                while not submissions(emulator)[wanted]:  # noqa: ASYNC110 - polls the emulator
                    await asyncio.sleep(0.05)
            await client.cancel("ticket-00001")
            results = await gather_results(client, 2)
    finally:
        emulator.configure(processing_seconds=0.5)
    (first,), (second,) = results["ticket-00001"], results["ticket-00002"]
    assert first.status == "canceled" and first.attempts == 1
    assert first.cost is not None and first.cost.batch_usd > 0  # it ran, and was paid for
    assert second.status == "succeeded"

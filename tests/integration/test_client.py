"""The Python client end to end: submit and submit_many against NATS and the four services."""

import asyncio
import json
import time

import nats
import nats.errors
import nats.js.errors
import pytest

from batchbus.client import BatchbusClient
from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.shared import subjects
from batchbus.shared.models import Task
from tests.integration.helpers import assert_submitted_once, stored_count, ticket

pytestmark = pytest.mark.nats

FAILS = {"metadata": {"user_id": "emulate:errored:invalid_request_error"}}


async def test_submit_returns_the_tasks_final_result(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str) -> None:
    async with BatchbusClient(nats_server.url, tenant) as client:
        async with asyncio.timeout(60):
            result = await client.submit(Task.model_validate(ticket(1)))
    assert (result.task_id, result.tenant, result.status) == ("ticket-00001", tenant, "succeeded")
    assert result.metadata == {"ticket": 1} and result.cost is not None


async def test_submit_many_yields_each_result_once_as_it_comes(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    tasks = [ticket(i) for i in range(40)] + [ticket(99, **FAILS)]
    seen = []
    async with BatchbusClient(nats_server.url, tenant) as client:
        async with asyncio.timeout(60):
            async for result in client.submit_many(tasks):
                seen.append(result)
    assert sorted(r.task_id for r in seen) == sorted(t["task_id"] for t in tasks)
    by_id = {r.task_id: r for r in seen}
    assert by_id["ticket-00099"].status == "errored"
    assert by_id["ticket-00099"].error and by_id["ticket-00099"].error.type == \
        "invalid_request_error"
    assert all(r.status == "succeeded" for i, r in by_id.items() if i != "ticket-00099")
    assert_submitted_once(emulator, tenant, [t["task_id"] for t in tasks])


async def test_a_task_with_a_result_is_answered_from_the_store_and_not_sent_again(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    async with BatchbusClient(nats_server.url, tenant) as client:
        async with asyncio.timeout(60):
            first = await client.submit(ticket(1))
            tasks_before = (await client.nc.jetstream().stream_info(
                subjects.STREAM_TASKS)).state.last_seq
            again = [r async for r in client.submit_many([ticket(1), ticket(2)])]
            tasks_after = (await client.nc.jetstream().stream_info(
                subjects.STREAM_TASKS)).state.last_seq
        assert await stored_count(nats_server.url, subjects.results(tenant, "ticket-00001")) == 1
    assert again[0] == first  # stored results come first
    assert again[1].task_id == "ticket-00002" and again[1].status == "succeeded"
    assert tasks_after - tasks_before == 1  # only ticket-00002 was published
    assert_submitted_once(emulator, tenant, ["ticket-00001", "ticket-00002"])


async def test_a_fixed_task_gets_its_new_result_not_the_old_rejection(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str) -> None:
    broken = {"task_id": "ticket-00007", "params": {"model": "claude-sonnet-4-6",
                                                    "messages": []}}  # no max_tokens
    async with BatchbusClient(nats_server.url, tenant) as client:
        async with asyncio.timeout(60):
            rejected = await client.submit(broken)
            fixed = await client.submit(ticket(7))
    assert rejected.status == "rejected" and rejected.error is not None
    assert fixed.status == "succeeded" and fixed.task_id == "ticket-00007"


async def test_a_later_malformed_copy_does_not_hide_the_stored_result(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str) -> None:
    """A malformed copy sent after the task succeeded is rejected on the same subject; the
    task's id stays claimed, so only the earlier stored result can answer it."""
    subject = subjects.results(tenant, "ticket-00003")
    async with BatchbusClient(nats_server.url, tenant) as client:
        async with asyncio.timeout(60):
            first = await client.submit(ticket(3))
            sub = await client.nc.jetstream().subscribe(subject, ordered_consumer=True)
            await client.publish(json.dumps({"task_id": "ticket-00003", "params": {}}).encode())
            stored = [json.loads((await sub.next_msg(timeout=30)).data) for _ in range(2)]
            await sub.unsubscribe()
            assert [r["status"] for r in stored] == ["succeeded", "rejected"]
            again = await client.submit(ticket(3))
    assert again == first


async def test_submit_refuses_bad_ids_before_publishing(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str) -> None:
    async with BatchbusClient(nats_server.url, tenant) as client:
        before = (await client.nc.jetstream().stream_info(subjects.STREAM_TASKS)).state.last_seq
        with pytest.raises(ValueError, match="must match"):
            await client.submit({**ticket(1), "task_id": "has space"})
        with pytest.raises(ValueError, match="appears twice"):
            [r async for r in client.submit_many([ticket(1), ticket(2), ticket(1)])]
        after = (await client.nc.jetstream().stream_info(subjects.STREAM_TASKS)).state.last_seq
    assert after == before


async def test_a_publish_failure_is_raised_not_waited_on(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str) -> None:
    """Here storing the params of a task too large for a message fails: a stream squats on
    the tenant's bucket name without its subjects (the task itself would go by reference)."""
    too_big = ticket(1, messages=[{"role": "user", "content": "x" * 2_000_000}])
    async with BatchbusClient(nats_server.url, tenant) as client:
        await client.nc.jetstream().add_stream(name=f"OBJ_{subjects.payloads(tenant)}",
                                               subjects=[f"squatter.{tenant}"])
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            async with asyncio.timeout(30):
                await client.submit(too_big)


async def test_a_shared_connection_stays_open_and_history_replays(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        async with BatchbusClient.over(nc, tenant) as client:
            async with asyncio.timeout(60):
                done = [r async for r in client.submit_many([ticket(1), ticket(2)])]
        assert nc.is_connected
        async with BatchbusClient.over(nc, tenant) as client:
            replayed = [r async for r in client.history()]
        assert sorted(r.task_id for r in replayed) == sorted(r.task_id for r in done)
    finally:
        await nc.close()


async def test_leaving_results_early_closes_the_client_at_once(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str) -> None:
    """Breaking out of `results()` leaves its subscription with messages buffered; closing
    the client once waited for them to drain (30 s, then DrainTimeoutError)."""
    async with asyncio.timeout(60):
        async with BatchbusClient(nats_server.url, tenant) as client:
            await client.publish_many(ticket(i) for i in range(300))
            assert len([r async for r in client.submit_many([ticket(i) for i in range(300)])]) \
                == 300
    async with BatchbusClient(nats_server.url, tenant) as client:
        stream = client.results()  # held: the generator is not collected at the break
        async for _ in stream:
            break
        leaving = time.monotonic()
    # Not asyncio.timeout: nats-py's drain swallows the cancel, and the wait went unseen.
    assert time.monotonic() - leaving < 10  # a drain waited out its 30 s timeout

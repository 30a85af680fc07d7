"""End to end on real parts: nats-server, the four services, the SDK and the emulator."""

import asyncio
import urllib.request
from decimal import Decimal

import nats
import pytest

from batchbus.client import BatchbusClient
from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.services import Pipeline
from batchbus.shared import subjects
from batchbus.shared.models import DeadLetter
from tests.integration.helpers import (
    assert_submitted_once,
    gather_results,
    stored_count,
    ticket,
)

pytestmark = pytest.mark.nats


async def dead_letters(url: str, tenant: str, expected: int) -> list[DeadLetter]:
    """Waits (bounded) for `expected` dead letters of the tenant, then checks there are no more."""
    nc = await nats.connect(url)
    try:
        sub = await nc.jetstream().subscribe(subjects.dead_letters(tenant), ordered_consumer=True)
        letters = [DeadLetter.model_validate_json((await sub.next_msg(timeout=30)).data)
                   for _ in range(expected)]
    finally:
        await nc.close()
    assert await stored_count(url, subjects.dead_letters(tenant), subjects.STREAM_DEAD_LETTERS) \
        == expected
    return letters


async def test_every_task_gets_exactly_one_final_result(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server, tenant: str) -> None:
    tasks = [ticket(i) for i in range(300)]
    async with BatchbusClient(nats_server.url, tenant) as client:
        await client.publish_many(tasks)
        results = await gather_results(client, len(tasks))
    assert sorted(results) == sorted(t["task_id"] for t in tasks)
    for task in tasks:
        (result,) = results[task["task_id"]]
        assert result.status == "succeeded" and result.tenant == tenant
        assert result.attempts == 1 and result.route == "batch"
        assert result.metadata == task["metadata"]
        assert result.batch_id and result.batch_id.startswith("msgbatch_")
        assert result.message and result.message["content"][0]["text"]
        assert result.usage and result.usage.output_tokens > 0
        assert result.cost and result.cost.saved_usd == pytest.approx(result.cost.batch_usd)
    # Exactly one stored result per task, and each attempt submitted once.
    assert await stored_count(nats_server.url, subjects.results_of(tenant)) == len(tasks)
    assert_submitted_once(emulator)


async def test_a_duplicate_task_id_is_neither_charged_nor_answered_twice(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server, tenant: str) -> None:
    async with BatchbusClient(nats_server.url, tenant) as client:
        await client.publish(ticket(1))
        await client.publish(ticket(1, max_tokens=99))  # same id, other body: still a duplicate
        await client.publish(ticket(2))
        results = await gather_results(client, 2)
        # A third, later copy after the first result exists is dropped as well.
        await client.publish(ticket(1))
        await client.publish(ticket(3))
        results = await gather_results(client, 3)
    assert all(len(r) == 1 for r in results.values())
    assert await stored_count(nats_server.url, subjects.results(tenant, "ticket-00001")) == 1
    url = pipeline.services["intake"].metrics_url
    metrics = (await asyncio.to_thread(lambda: urllib.request.urlopen(url).read())).decode()
    assert "batchbus_tasks_deduplicated_total 2.0" in metrics


async def test_the_cost_example_adds_up_exactly(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server, tenant: str) -> None:
    """500 in / 200 out on a $3/$15 model: $45.00 real-time, $22.50 batch per 10,000 tickets.

    1,000 tickets here (a tenth), so the sums are $4.50 and $2.25; 1,500 input tokens per
    ticket give the article's $75 / $37.50 for 10,000, i.e. $7.50 / $3.75 for 1,000.
    """
    for input_tokens, realtime, batch in ((500, "4.50", "2.25"), (1500, "7.50", "3.75")):
        emulator.configure(usage_override={"input_tokens": input_tokens, "output_tokens": 200})
        run_tenant = f"{tenant}-{input_tokens}"
        async with BatchbusClient(nats_server.url, run_tenant) as client:
            await client.publish_many(ticket(i, max_tokens=1024) for i in range(1000))
            results = await gather_results(client, 1000)
        costs = [r[0].cost for r in results.values()]
        assert all(c is not None for c in costs)
        assert sum(Decimal(str(c.realtime_usd)) for c in costs) == Decimal(realtime)  # type: ignore[union-attr]
        assert sum(Decimal(str(c.batch_usd)) for c in costs) == Decimal(batch)  # type: ignore[union-attr]
    emulator.configure(usage_override=None)


async def test_mixed_outcomes_end_with_the_right_status_and_attempts(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server, tenant: str) -> None:
    def directive(text: str) -> dict[str, str]:
        return {"user_id": text}

    tasks = {
        "ok": ticket(0),
        "flaky": ticket(1, metadata=directive("emulate:errored:overloaded_error:first=1")),
        "broken": ticket(2, metadata=directive("emulate:errored:invalid_request_error")),
        "late": ticket(3, metadata=directive("emulate:expired:first=1")),
        "doomed": ticket(4, metadata=directive("emulate:errored:api_error")),
        "stopped": ticket(5, metadata=directive("emulate:canceled")),
    }
    async with BatchbusClient(nats_server.url, tenant) as client:
        await client.publish_many(tasks.values())
        results = await gather_results(client, len(tasks))
    final = {name: results[task["task_id"]] for name, task in tasks.items()}
    assert all(len(r) == 1 for r in final.values())
    got = {name: (r[0].status, r[0].attempts) for name, r in final.items()}
    assert got == {"ok": ("succeeded", 1), "flaky": ("succeeded", 2),
                   "broken": ("errored", 1), "late": ("succeeded", 2),
                   "doomed": ("errored", 3), "stopped": ("canceled", 1)}
    assert final["broken"][0].error and final["broken"][0].error.type == "invalid_request_error"
    assert final["doomed"][0].error and final["doomed"][0].error.type == "api_error"
    # Only the task that used up its attempts is a dead letter, with its whole history.
    letters = await dead_letters(nats_server.url, tenant, expected=1)
    assert [letter.task_id for letter in letters] == [tasks["doomed"]["task_id"]]
    (letter,) = letters
    assert [(h.attempt, h.outcome) for h in letter.history] == [
        (1, "api_error"), (2, "api_error"), (3, "api_error")]
    assert len({h.batch_id for h in letter.history}) == 3
    assert letter.params == tasks["doomed"]["params"] and letter.result.status == "errored"


async def test_the_api_being_busy_delays_tasks_but_loses_none(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server, tenant: str) -> None:
    emulator.configure(faults=[{"operation": "create", "status": 429, "times": 2,
                                "retry_after": 0.3},
                               {"operation": "create", "status": 529, "times": 1},
                               {"operation": "retrieve", "status": 500, "times": 3},
                               {"operation": "retrieve", "status": 429, "times": 2,
                                "retry_after_ms": 100}])
    async with BatchbusClient(nats_server.url, tenant) as client:
        await client.publish_many(ticket(i) for i in range(50))
        results = await gather_results(client, 50)
    assert {r[0].status for r in results.values()} == {"succeeded"}
    assert all(len(r) == 1 for r in results.values())
    assert_submitted_once(emulator)
    stats = emulator.state.stats()
    assert stats["faults_remaining"] == [0, 0, 0, 0] and stats["calls"]["create"] >= 4
    emulator.configure(faults=[])

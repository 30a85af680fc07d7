"""Daily budgets on a real nats-server: compare-and-set reservations, and the pipeline
rejecting, releasing and settling them against the emulator."""

import asyncio
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from time import monotonic
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError

from batchbus.client import BatchbusClient
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.services.intake.budgets import BudgetGate, Refusal, worst_case_usd
from batchbus.services.intake.handlers import TaskIntake
from batchbus.services.intake.metrics import IntakeMetrics
from batchbus.services.intake.routing import BatchHistory, Router
from batchbus.services.intake.settings import IntakeSettings
from batchbus.services.intake.validation import Limits
from batchbus.shared import streams, subjects
from batchbus.shared.budgets import Budgets, usd
from batchbus.shared.cancels import Cancels
from batchbus.shared.models import ErrorInfo, Reservation, Result
from batchbus.shared.pricing import default_prices
from batchbus.shared.publishing import publish_canceled, publish_result
from batchbus.shared.settings import NatsSettings
from tests.integration.helpers import gather_results, stored_count, ticket

pytestmark = pytest.mark.nats

PRICES = default_prices()
RUN = uuid.uuid4().hex[:8]  # the pipeline's budgets are fixed at start: tenants of this run
SPENDER, FAILER, HURRIED = f"spend{RUN}", f"fail{RUN}", f"rt{RUN}"
SPENDER_BUDGET = Decimal("0.01")  # two tickets fit; a 4,000-token answer does not
FAILING = ticket(10, metadata={"user_id": "emulate:errored:invalid_request_error"})
AFTER = ticket(11)


def raw(task: dict[str, Any]) -> bytes:
    return json.dumps(task).encode()


def worst(task: dict[str, Any], realtime: bool = False) -> Decimal:
    found = worst_case_usd(task["params"], len(raw(task)), PRICES, realtime)
    assert found is not None
    return found


# Room for the failing task, but not for it and the next one: only a release lets AFTER in.
FAILER_BUDGET = worst(FAILING) + worst(AFTER) / 2
# A long answer fits at batch prices but not at full price; a short one fits at either.
LONG = {**ticket(20, max_tokens=1000), "route": "realtime"}
SHORT = {**ticket(21), "route": "realtime"}
HURRIED_BUDGET = worst(LONG) * 3 / 2


@pytest.fixture(scope="module")
def pipeline_overrides() -> dict[str, str]:
    return {"INTAKE_BUDGETS": f"{SPENDER}={SPENDER_BUDGET},{FAILER}={FAILER_BUDGET},"
                              f"{HURRIED}={HURRIED_BUDGET}"}


async def budgets_of(url: str) -> tuple[Any, Budgets]:
    nc = await nats.connect(url)
    return nc, Budgets(await streams.budgets_bucket(nc.jetstream(), NatsSettings(url=url)))


async def settled_total(url: str, tenant: str, expected: Decimal, timeout: float = 30) -> Decimal:
    """The tenant's total for today once it equals `expected`, or as it is at the deadline
    (the notifier settles just after it stores a result)."""
    nc, budgets = await budgets_of(url)
    try:
        deadline = monotonic() + timeout
        while True:
            total = await budgets.total(tenant, datetime.now(UTC).date())
            if total == expected or monotonic() > deadline:
                return total
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def second_result(client: BatchbusClient, task_id: str, timeout: float = 60) -> Result:
    """The second result stored for `task_id` (a resend after its rejection)."""
    async def read() -> Result:
        seen = 0
        async for result in client.results():
            seen += result.task_id == task_id
            if seen == 2:
                return result
        raise AssertionError("results ended")

    return await asyncio.wait_for(read(), timeout)


async def test_a_tenant_over_its_budget_is_rejected_with_the_figures(
        pipeline: Pipeline, nats_server: NatsServer) -> None:
    costs: list[Decimal] = []
    async with BatchbusClient(nats_server.url, SPENDER) as client:
        for i in (1, 2):
            await client.publish(raw(ticket(i)))
        first = await gather_results(client, 2)
        assert sorted(r[0].status for r in first.values()) == ["succeeded", "succeeded"]
        costs += [Decimal(repr(r[0].cost.batch_usd)) for r in first.values() if r[0].cost]
        spent = await settled_total(nats_server.url, SPENDER, sum(costs, Decimal(0)))
        assert spent == sum(costs, Decimal(0)) > 0

        greedy = ticket(3, max_tokens=4000)
        await client.publish(raw(greedy))
        rejected = (await gather_results(client, 3))["ticket-00003"][0]
        assert rejected.status == "rejected" and rejected.error is not None
        assert rejected.error.type == "over_budget"
        for figure in (usd(spent), usd(SPENDER_BUDGET), usd(worst(greedy))):
            assert figure in rejected.error.message, (figure, rejected.error.message)

        # The refused id stays free: the same task, asking for less, now goes through.
        await client.publish(raw(ticket(3)))
        resent = await second_result(client, "ticket-00003")
    assert resent.status == "succeeded" and resent.cost is not None
    costs.append(Decimal(repr(resent.cost.batch_usd)))
    # Every reservation swapped for its real cost, to the last digit.
    total = await settled_total(nats_server.url, SPENDER, sum(costs, Decimal(0)))
    assert total == sum(costs, Decimal(0))


async def test_a_task_that_fails_releases_its_reservation(
        pipeline: Pipeline, nats_server: NatsServer) -> None:
    assert worst(AFTER) + worst(FAILING) > FAILER_BUDGET >= worst(FAILING)
    async with BatchbusClient(nats_server.url, FAILER) as client:
        await client.publish(raw(FAILING))
        failed = (await gather_results(client, 1))["ticket-00010"][0]
        assert failed.status == "errored" and failed.cost is None
        assert await settled_total(nats_server.url, FAILER, Decimal(0)) == 0
        await client.publish(raw(AFTER))
        after = (await gather_results(client, 2))["ticket-00011"][0]
    assert after.status == "succeeded" and after.cost is not None
    cost = Decimal(repr(after.cost.batch_usd))
    assert await settled_total(nats_server.url, FAILER, cost) == cost


async def test_the_real_time_route_reserves_and_settles_at_full_price(
        pipeline: Pipeline, nats_server: NatsServer) -> None:
    assert worst(LONG, realtime=True) > HURRIED_BUDGET >= worst(SHORT, realtime=True)
    async with BatchbusClient(nats_server.url, HURRIED) as client:
        await client.publish(raw(LONG))
        refused = (await gather_results(client, 1))["ticket-00020"][0]
        assert refused.status == "rejected" and refused.error is not None
        assert usd(worst(LONG, realtime=True)) in refused.error.message
        await client.publish(raw(SHORT))
        done = (await gather_results(client, 2))["ticket-00021"][0]
    assert done.status == "succeeded" and done.route == "realtime" and done.cost is not None
    cost = Decimal(repr(done.cost.batch_usd))  # what it cost: the full price
    assert cost == Decimal(repr(done.cost.realtime_usd))
    assert await settled_total(nats_server.url, HURRIED, cost) == cost


async def test_replicas_reserving_at_once_never_lose_an_update(nats_server: NatsServer,
                                                               tenant: str) -> None:
    (nc1, one), (nc2, two) = await budgets_of(nats_server.url), await budgets_of(nats_server.url)
    today, cent = date(2026, 1, 2), Decimal("0.01")
    try:
        held = await asyncio.gather(*(
            (one if i % 2 else two).reserve(tenant, f"task-{i}", today, cent, Decimal("0.30"),
                                            redelivered=False) for i in range(50)))
        reservations = [h.reservation for h in held if h.reservation is not None]
        assert len(reservations) == 30 and all(h.new for h in held if h.reservation)
        assert all(h.total <= Decimal("0.30") for h in held)
        assert await one.total(tenant, today) == Decimal("0.30")
        # Settling from both replicas at once: each real cost lands exactly once.
        await asyncio.gather(*((one if i % 2 else two).settle(tenant, r, Decimal("0.0033"))
                               for i, r in enumerate(reservations)))
        assert await two.total(tenant, today) == Decimal("0.099")
    finally:
        await nc1.close()
        await nc2.close()


async def test_a_task_is_reserved_once_however_often_it_is_delivered(
        nats_server: NatsServer, tenant: str) -> None:
    (nc1, one), (nc2, two) = await budgets_of(nats_server.url), await budgets_of(nats_server.url)
    today, amount, budget = date(2026, 1, 3), Decimal("0.25"), Decimal(1)
    try:
        # Two deliveries racing (an ack wait ran out): one reservation survives.
        both = await asyncio.gather(one.reserve(tenant, "t", today, amount, budget, False),
                                    two.reserve(tenant, "t", today, amount, budget, False))
        assert both[0].reservation == both[1].reservation == Reservation(day=today, usd=amount)
        assert sorted(h.new for h in both) == [False, True]  # counted once
        # A redelivery after a crash finds the reservation instead of making another.
        again = await one.reserve(tenant, "t", today, amount, budget, redelivered=True)
        assert again.reservation == both[0].reservation and not again.new
        assert await two.total(tenant, today) == amount
    finally:
        await nc1.close()
        await nc2.close()


async def test_a_budgeted_tenant_cannot_use_a_model_without_a_price(
        nats_server: NatsServer, tenant: str) -> None:
    nc, budgets = await budgets_of(nats_server.url)
    try:
        gate = BudgetGate(budgets, {tenant: Decimal(1)}, PRICES)
        task = {"model": "claude-unpriced", "max_tokens": 10, "messages": []}
        refused = await gate.admit(tenant, "t", task, 100, date(2026, 1, 4), False, False)
        assert isinstance(refused, Refusal) and refused.reason == "unpriced_model"
        assert "claude-unpriced" in refused.message
        assert await gate.admit("other", "t", task, 100, date(2026, 1, 4), False, False) is None
    finally:
        await nc.close()


async def test_a_refused_task_back_after_a_crash_is_not_judged_again(
        nats_server: NatsServer, tenant: str) -> None:
    """Intake stored the rejection, then died before freeing the id and acking. Its budget has
    room by the time the task comes back: it must still not be accepted (a second result)."""
    nc = await nats.connect(nats_server.url)
    try:
        js, settings = nc.jetstream(), NatsSettings(url=nats_server.url)
        await streams.ensure_streams(js, settings)
        task_ids = await streams.task_ids_bucket(js, settings)
        budgets = Budgets(await streams.budgets_bucket(js, settings))
        intake = TaskIntake(
            js, task_ids, Cancels(await streams.cancels_bucket(js, settings)),
            Limits(allowed_models=None, max_tokens=1000, max_task_bytes=1 << 16),
            IntakeMetrics(), Router(BatchHistory(), IntakeSettings().route_policy()),
            BudgetGate(budgets, {tenant: Decimal(100)}, PRICES))
        seq, task_id = 10**9 + uuid.uuid4().int % 10**6, "ticket-00001"
        await task_ids.create(subjects.task_key(tenant, task_id), str(seq).encode())
        await publish_result(js, Result(task_id=task_id, tenant=tenant, status="rejected",
                                        error=ErrorInfo(type="over_budget", message="...")),
                             subjects.rejected_msg_id(tenant, seq))
        # Its redelivery (the second), as the intake consumer hands it over.
        stamp = int(datetime.now(UTC).timestamp() * 1e9)
        await intake.handle(Msg(nc, subject=subjects.tasks(tenant), data=raw(ticket(1)),
                                reply=f"$JS.ACK.{subjects.STREAM_TASKS}.budget-test.2.{seq}.2."
                                      f"{stamp}.0"))
        assert await stored_count(nats_server.url, subjects.accepted(tenant),
                                  subjects.STREAM_INTERNAL) == 0
        assert await stored_count(nats_server.url, subjects.results(tenant, task_id)) == 1
        with pytest.raises(KeyNotFoundError):  # the id is free again, as for any rejection
            await task_ids.get(subjects.task_key(tenant, task_id))
        assert await budgets.total(tenant, datetime.now(UTC).date()) == 0
    finally:
        await nc.close()


async def test_a_task_canceled_while_waiting_releases_its_reservation_once(
        nats_server: NatsServer, tenant: str) -> None:
    nc, budgets = await budgets_of(nats_server.url)
    today, budget = datetime.now(UTC).date(), Decimal(1)
    try:
        js = nc.jetstream()
        await streams.ensure_streams(js, NatsSettings(url=nats_server.url))
        waiting = (await budgets.reserve(tenant, "waiting", today, Decimal("0.4"), budget,
                                         False)).reservation
        other = await budgets.reserve(tenant, "other", today, Decimal("0.3"), budget, False)
        assert waiting is not None and other.reservation is not None
        # As the batcher cancels a task it holds: the result, then the release.
        assert await publish_canceled(js, tenant, "waiting", {}, 0, reservation=waiting)
        assert await budgets.total(tenant, today) == Decimal("0.3")
        # A repeat (a redelivered task message) stores nothing and releases nothing.
        assert not await publish_canceled(js, tenant, "waiting", {}, 0, reservation=waiting)
        assert await budgets.total(tenant, today) == Decimal("0.3")
    finally:
        await nc.close()

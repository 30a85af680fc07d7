"""Refusals, fallback models and betas end to end: nats-server, the four services, the SDK and
the emulator (which refuses by directive or by outcome rule, and records each create's betas).
"""

import asyncio
import math
import re
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.services.batcher.batching import custom_id
from batchbus.shared.pricing import TokenCounts, default_prices
from tests.integration.helpers import assert_submitted_once, results_of, submissions, ticket

pytestmark = pytest.mark.nats

REFUSER, FALLBACK = "claude-opus-5-5", "claude-sonnet-5-5"
MONEY = ("batchbus_cost_batch_usd_total", "batchbus_cost_realtime_usd_total",
         "batchbus_cost_saved_usd_total")


def task(tenant: str, name: str, directive: str | None = None, model: str = REFUSER,
         **fields: Any) -> dict[str, Any]:
    """A task (on a Claude 5 model unless told) whose params are unique to this tenant and
    name."""
    body = ticket(0, model=model)
    body["task_id"] = name
    body["params"]["messages"][0]["content"] = f"{tenant} {name}: my parcel is late"
    if directive is not None:
        body["params"]["metadata"] = {"user_id": f"emulate:{directive}"}
    return {**body, **fields}


def series(url: str, name: str, **labels: str) -> float:
    """One series of a service's /metrics (its label set exactly), 0 if absent."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
                     if labels else "")
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(wanted + " "))


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Polls `condition` (a scrape) until it holds; fails after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if await asyncio.to_thread(condition):
                    return
                await asyncio.sleep(0.1)  # the scrape interval; the bound is `timeout`
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None



async def test_refused_tasks_go_to_their_fallback_once_and_the_money_adds_up(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    notifier = pipeline.services["notifier"].metrics_url
    before = {name: series(notifier, name) for name in MONEY}
    retries = series(notifier, "batchbus_retries_total", reason="refusal")
    refusals = {c: series(notifier, "batchbus_refusals_total", category=c)
                for c in ("cyber", "bio", "none")}
    # Only the first attempt of `rescued` is refused (a rule on its custom id); the fallback
    # model answers. `stubborn` is refused by both models; `final` has no fallback;
    # `live` is refused on the real-time route and goes on to a batch, refused there too.
    emulator.configure(outcome_rules=[{
        "custom_id_regex": f"^{re.escape(custom_id(tenant, 'rescued', 1))}$",
        "outcome": "refusal:cyber"}])
    tasks = [task(tenant, "rescued", fallback_model=FALLBACK, metadata={"k": 1}),
             task(tenant, "stubborn", "refusal:bio", fallback_model=FALLBACK),
             task(tenant, "final", "refusal"),
             task(tenant, "live", "refusal:bio", fallback_model=FALLBACK, route="realtime"),
             task(tenant, "plain")]
    results = await results_of(nats_server.url, tenant, tasks)

    rescued = results["rescued"]
    assert (rescued.status, rescued.attempts, rescued.refusal, rescued.route) == (
        "succeeded", 2, None, "batch")
    assert rescued.message is not None and rescued.message["model"] == FALLBACK
    assert rescued.metadata == {"k": 1}
    assert submissions(emulator)[custom_id(tenant, "rescued", 2)] == 1
    assert submissions(emulator)[custom_id(tenant, "rescued", 3)] == 0
    for name, category, attempts in (("stubborn", "bio", 2), ("final", None, 1),
                                     ("live", "bio", 2)):
        result = results[name]
        assert (result.status, result.attempts, result.route) == ("succeeded", attempts, "batch")
        assert result.refusal is not None and result.refusal.category == category
        assert result.refusal.explanation
        assert result.usage is not None and result.cost is not None and result.cost.batch_usd > 0
    # Refused then answered: the result's cost is both attempts', more than its own reply's.
    own = default_prices().cost(FALLBACK, TokenCounts.from_usage(rescued.message["usage"]))
    assert own is not None and rescued.cost is not None
    assert rescued.cost.batch_usd > own.batch_usd
    # Its real-time attempt was billed at full price: less than half of the total was saved.
    live = results["live"]
    assert live.cost is not None and 0 < live.cost.saved_usd < live.cost.batch_usd

    # Every refusal counted by its category, once; the money counted is the money in the
    # results (the refused attempts' when they happened, never again).
    await until(lambda: all(
        series(notifier, "batchbus_refusals_total", category=c) - refusals[c] == n
        for c, n in (("cyber", 1), ("bio", 4), ("none", 1))), "the refusals to be counted")
    spent = {MONEY[0]: math.fsum(r.cost.batch_usd for r in results.values() if r.cost),
             MONEY[1]: math.fsum(r.cost.realtime_usd for r in results.values() if r.cost),
             MONEY[2]: math.fsum(r.cost.saved_usd for r in results.values() if r.cost)}
    await until(lambda: all(
        math.isclose(series(notifier, name) - before[name], spent[name], rel_tol=1e-9,
                     abs_tol=1e-12) for name in MONEY), "the money to be counted")
    assert series(notifier, "batchbus_retries_total", reason="refusal") - retries == 3


async def test_a_deprecated_model_warning_reaches_the_result_on_either_route(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    old = "claude-opus-4-5"  # deprecated, with a retirement date (shared/data/models.json)
    tasks = [task(tenant, "batched", model=old),
             task(tenant, "live", route="realtime", model=old),
             task(tenant, "fresh")]
    results = await results_of(nats_server.url, tenant, tasks)
    for name in ("batched", "live"):
        result = results[name]
        assert result.status == "succeeded" and result.warnings, name
        assert any(old in warning for warning in result.warnings)
    assert results["fresh"].warnings == []


async def test_tasks_with_different_betas_never_share_a_batch(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    batcher = pipeline.services["batcher"].metrics_url
    flushed = series(batcher, "batchbus_batch_flushes_total", reason="betas")
    sets = [[], ["files-api-2025-04-14"],
            ["files-api-2025-04-14", "context-management-2025-06-27"],
            ["context-management-2025-06-27", "files-api-2025-04-14"]]  # the same set again
    tasks = [task(tenant, f"b{i}", betas=sets[i % len(sets)]) for i in range(24)]
    results = await results_of(nats_server.url, tenant, tasks)
    assert all(r.status == "succeeded" and r.route == "batch" for r in results.values())
    # Each task went in one create, whose betas are exactly the task's set.
    sent = {r["custom_id"]: sorted(c["betas"]) for c in emulator.state.creates()
            for r in c["requests"]}
    for i, body in enumerate(tasks):
        assert sent[custom_id(tenant, body["task_id"], 1)] == sorted(set(sets[i % len(sets)]))
    await until(lambda: series(batcher, "batchbus_batch_flushes_total", reason="betas")
                > flushed, "a flush for a change of betas")


async def test_a_create_in_doubt_with_betas_is_adopted_not_repeated(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    """The batch a beta create made is listed like any other: the batcher finds it."""
    batcher = pipeline.services["batcher"].metrics_url
    adopted = series(batcher, "batchbus_batch_create_outcomes_total", outcome="adopted")
    betas = ["files-api-2025-04-14"]
    emulator.configure(faults=[{"operation": "create", "times": 1, "status": 500,
                                "after_create": True}])
    try:
        tasks = [task(tenant, f"d{i}", betas=betas) for i in range(7)]
        results = await results_of(nats_server.url, tenant, tasks)
        assert emulator.state.stats()["faults_remaining"] == [0]
    finally:
        emulator.configure(faults=[])
    assert all(r.status == "succeeded" for r in results.values())
    assert_submitted_once(emulator, tenant, [t["task_id"] for t in tasks])
    cids = {custom_id(tenant, t["task_id"], 1) for t in tasks}
    assert {tuple(c["betas"]) for c in emulator.state.creates()
            if cids & {r["custom_id"] for r in c["requests"]}} == {tuple(betas)}
    assert series(batcher, "batchbus_batch_create_outcomes_total", outcome="adopted") > adopted

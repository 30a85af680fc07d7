"""Today's API end to end: intake refuses what the API would certainly fail, before any
create; a deprecated model runs with a warning; a model the Models API stops listing is
refused; tasks with different betas never share a batch."""

import asyncio
import urllib.request
from decimal import Decimal
from typing import Any

import pytest

from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.services.batcher.batching import custom_id
from tests.integration.helpers import results_of, submissions

pytestmark = pytest.mark.nats

BETA_300K = "output-300k-2026-03-24"
FILES = "files-api-2025-04-14"


@pytest.fixture(scope="module")
def pipeline_overrides() -> dict[str, str]:
    # Intake reads the Models API every second here (an hour by default).
    return {"INTAKE_MODELS_REFRESH_SECONDS": "1"}


def task(task_id: str, model: str, max_tokens: int = 64, **fields: Any) -> dict[str, Any]:
    params = {"model": model, "max_tokens": max_tokens,
              "messages": [{"role": "user", "content": f"Question {task_id}?"}]}
    return {"task_id": task_id, "params": params | fields.pop("params", {}), **fields}



async def test_what_the_api_would_fail_is_rejected_before_any_create(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    tasks = [task("retired", "claude-sonnet-4-5"),
             task("sampling", "claude-opus-5-5", params={"temperature": 0.2}),
             task("too-long", "claude-sonnet-5-5", max_tokens=200_000),
             task("deprecated", "claude-opus-4-5")]
    results = await results_of(nats_server.url, tenant, tasks)
    expected = {"retired": "was retired on 2026-11-30",
                "sampling": "params.temperature is not accepted by claude-opus-5-5",
                "too-long": f"the {BETA_300K} beta raises it to 300000"}
    for task_id, words in expected.items():
        result = results[task_id]
        assert result.status == "rejected" and result.error is not None
        assert words in result.error.message, result.error.message
    sent = submissions(emulator)
    assert all(sent[custom_id(tenant, t, 1)] == 0 for t in expected)
    ran = results["deprecated"]
    assert ran.status == "succeeded" and ran.warnings == [
        "claude-opus-4-5 is deprecated and retires on 2027-01-22; use claude-opus-5-5"]


async def until_intake_reports(pipeline: Pipeline, series: str, value: float) -> None:
    url = pipeline.services["intake"].metrics_url
    async with asyncio.timeout(30):
        while True:
            text = await asyncio.to_thread(
                lambda: urllib.request.urlopen(url, timeout=5).read().decode())
            if any(line.startswith(series + " ") and float(line.split()[-1]) >= value
                   for line in text.splitlines()):
                return
            await asyncio.sleep(0.2)  # intake's next read of the Models API is what we wait for


async def test_a_model_the_models_api_stops_listing_is_rejected(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    before = await results_of(nats_server.url, tenant, [task("before", "claude-opus-4-6")])
    assert before["before"].status == "succeeded"
    emulator.remove_model("claude-opus-4-6")
    await until_intake_reports(pipeline, 'batchbus_catalog_models{lifecycle="unlisted"}', 1)
    after = await results_of(nats_server.url, tenant + "-b", [task("after", "claude-opus-4-6")])
    result = after["after"]
    assert result.status == "rejected" and result.error is not None
    assert "is not listed by the Models API" in result.error.message


async def test_tasks_with_different_betas_never_share_a_batch(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    sets = [[], [BETA_300K], [FILES], [FILES, BETA_300K]]
    tasks = [task(f"t{i}", "claude-sonnet-5-5", max_tokens=150_000 if BETA_300K in betas
                  else 64, betas=betas)
             for i, betas in ((i, sets[i % 4]) for i in range(24))]
    results = await results_of(nats_server.url, tenant, tasks)
    assert {r.status for r in results.values()} == {"succeeded"}
    betas_of = {custom_id(tenant, t["task_id"], 1): sorted(t["betas"]) for t in tasks}
    mine = [c for c in emulator.state.creates()
            if any(r["custom_id"] in betas_of for r in c["requests"])]
    assert len(mine) >= len(sets)
    for create in mine:
        inside = {tuple(betas_of[r["custom_id"]]) for r in create["requests"]}
        assert inside == {tuple(sorted(create["betas"]))}, create["batch_id"]


async def test_haiku_5_5_long_prompts_are_billed_in_their_band_end_to_end(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str) -> None:
    def long(task_id: str, prompt_tokens: int) -> dict[str, Any]:
        directive = f"emulate:succeeded:input_tokens={prompt_tokens}"
        return task(task_id, "claude-haiku-5-5", params={"metadata": {"user_id": directive}})

    results = await results_of(nats_server.url, tenant, [long("short", 90_000),
                                                         long("long", 150_000)])
    for task_id, rates in (("short", ("0.10", "0.50")), ("long", ("0.50", "2.50"))):
        result = results[task_id]
        assert result.status == "succeeded" and result.usage and result.cost
        usage = result.usage
        assert usage.cache_creation_input_tokens == usage.cache_read_input_tokens == 0
        rate_in, rate_out = (Decimal(r) for r in rates)
        realtime = (usage.input_tokens * rate_in + usage.output_tokens * rate_out) / 1_000_000
        assert Decimal(repr(result.cost.realtime_usd)) == realtime
        assert Decimal(repr(result.cost.batch_usd)) == realtime / 2

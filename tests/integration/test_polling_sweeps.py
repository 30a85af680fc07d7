"""Hundreds of batches in flight are polled with a few list pages per sweep, not a call per
batch, and every end is noticed within the sweep ceiling."""

import asyncio
import urllib.request
from collections.abc import Iterator

import pytest

from batchbus.client import BatchbusClient
from batchbus.emulator.config import EmulatorConfig
from batchbus.emulator.server import EmulatorHandle, start_emulator
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from tests.conftest import TEST_API_KEY
from tests.integration.helpers import gather_results, ticket

pytestmark = pytest.mark.nats

BATCHES = 250  # three list pages


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    handle = start_emulator(EmulatorConfig(processing_seconds=8, api_keys={TEST_API_KEY}))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def pipeline_overrides() -> dict[str, str]:
    return {"BATCHER_MAX_REQUESTS": "1", "BATCHER_MAX_WAIT_SECONDS": "0.05",
            "POLLER_INTERVAL_SECONDS": "0.5", "POLLER_MAX_INTERVAL_SECONDS": "2",
            "POLLER_MAX_CALLS_PER_MINUTE": "600"}


async def test_many_batches_in_flight_cost_pages_not_calls_per_batch(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    async with BatchbusClient(nats_server.url, tenant) as client:
        await client.publish_many(ticket(i) for i in range(BATCHES))
        results = await gather_results(client, BATCHES, timeout=180)
    assert all(r[0].status == "succeeded" for r in results.values())
    poller = pipeline.services["poller"].metrics_url
    text = await asyncio.to_thread(
        lambda: urllib.request.urlopen(poller, timeout=5).read().decode())
    calls = {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
             if line.startswith("batchbus_poll_calls_total{")}
    # Each batch was in flight for 8 s or more, looked at every 0.5-2 s: a call per batch per
    # look would be thousands.
    assert calls.get("list", 0) > 0
    assert sum(calls.values()) < BATCHES, calls
    print(f"{BATCHES} batches: poll calls {calls}")
    noticed = {line.split('"')[1]: float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("batchbus_batch_end_noticed_seconds_bucket{")}
    assert noticed["+Inf"] >= BATCHES
    assert noticed["5.0"] == noticed["+Inf"], noticed  # within the 2 s ceiling and a sweep

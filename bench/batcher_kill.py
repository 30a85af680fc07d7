"""20,000 tasks with the batcher SIGKILLed mid-run: batches, creates, attempts paid twice.

    .venv/bin/python -m bench.batcher_kill [--tasks 20000]

Real parts throughout: an embedded nats-server, the emulator, the four services as processes.
"""

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

from batchbus.client import BatchbusClient
from batchbus.emulator.config import EmulatorConfig
from batchbus.emulator.server import start_emulator
from batchbus.launcher.nats_server import start_nats
from batchbus.launcher.services import Pipeline
from tests.fault.conftest import FAST_RECOVERY
from tests.integration.helpers import gather_results, ticket

KEY = "sk-bench"


async def main(tasks: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="batchbus-bench-"))
    server = start_nats(str(workdir / "nats"))
    emulator = start_emulator(EmulatorConfig(processing_seconds=1.0, api_keys={KEY}))
    env = {"NATS_URL": server.url, "ANTHROPIC_BASE_URL": emulator.url, "ANTHROPIC_API_KEY": KEY,
           "BATCHER_MAX_WAIT_SECONDS": "1", "BATCHER_DOUBT_SETTLE_SECONDS": "0",
           "POLLER_INTERVAL_SECONDS": "0.5", "POLLER_MAX_INTERVAL_SECONDS": "1", **FAST_RECOVERY}
    pipeline = Pipeline(env, workdir / "logs").start()
    try:
        started = time.monotonic()
        async with BatchbusClient(server.url, "bench") as client:
            publishing = asyncio.create_task(client.publish_many(ticket(i) for i in range(tasks)))
            while len(emulator.state.creates()) < 2:  # noqa: ASYNC110 - polls the emulator
                await asyncio.sleep(0.05)
            pipeline.services["batcher"].kill()
            killed_after = len(emulator.state.creates())
            pipeline.services["batcher"].start()
            await publishing
            results = await gather_results(client, tasks, timeout=600)
        elapsed = time.monotonic() - started
    finally:
        pipeline.stop()
        emulator.stop()
        server.stop()
    creates = emulator.state.creates()
    seen = Counter(r["custom_id"] for c in creates for r in c["requests"])
    print(f"tasks                       {tasks}")
    print(f"final results               {sum(len(r) for r in results.values())} "
          f"({Counter(r[0].status for r in results.values())})")
    print(f"batcher SIGKILLed after     {killed_after} batches")
    print(f"batches created             {len(creates)}")
    print(f"create calls seen by API    {emulator.state.stats()['calls']['create']}")
    print(f"attempts submitted twice    {sum(1 for n in seen.values() if n > 1)}")
    print(f"elapsed                     {elapsed:.1f}s")
    first: dict[str, int] = {}
    pairs: Counter[tuple[int, int]] = Counter()
    for index, create in enumerate(creates):
        for request in create["requests"]:
            if request["custom_id"] in first:
                pairs[(first[request["custom_id"]], index)] += 1
            first.setdefault(request["custom_id"], index)
    if pairs:
        print(f"duplicates by (batch, again in batch): {dict(pairs)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().tasks))

"""What batchbus keeps in JetStream per task, and what that comes to at a million tasks a day.

    .venv/bin/python -m bench.storage [--tasks 5000]

Runs --tasks tasks (the demo's tickets, 200-token answers from the emulator) through a local
stack, then reads every stream, bucket and object store: messages, bytes and subjects per
task. Steady state at a million tasks a day is bytes per task x 1e6 x the days each is kept.
Then the cost of a subject in nats-server's memory: 200,000 keys put in a KV bucket like
`task_ids` (one subject per task), the server's RSS before and after.
"""

import argparse
import asyncio
import shutil
import tempfile
import uuid

import nats

from batchbus.client import BatchbusClient
from batchbus.launcher.nats_server import start_nats
from batchbus.launcher.workload import tickets
from batchbus.shared import streams, subjects
from batchbus.shared.settings import NatsSettings
from bench.common import emit, rss_mb, stack
from tests.integration.helpers import gather_results

DAY = 24 * 3600.0
KEYS = 200_000
# Kept for no fixed time: records and manifests go with their batch once it is delivered.
UNTIL = {f"KV_{subjects.KV_BATCHES}": "with batch", "OBJ_batch_manifests": "with batch",
         f"KV_{subjects.KV_LEASES}": "one key"}


def retention_days(name: str, settings: NatsSettings) -> float | None:
    """How long an entry of this stream is kept; None: until deleted by batchbus or an
    operator (records and manifests go with their batch, dead letters stay)."""
    kept = {
        subjects.STREAM_TASKS: settings.results_max_age_seconds,
        subjects.STREAM_CANCELS: settings.results_max_age_seconds,
        subjects.STREAM_INTERNAL: settings.internal_max_age_seconds,
        subjects.STREAM_RESULTS: settings.results_max_age_seconds,
        subjects.STREAM_EVENTS: settings.results_max_age_seconds,
        f"KV_{subjects.KV_TASK_IDS}": settings.task_ids_ttl_seconds,
        f"KV_{subjects.KV_CANCELS}": settings.task_ids_ttl_seconds,
        f"KV_{subjects.KV_REALTIME_CALLS}": settings.task_ids_ttl_seconds,
        f"KV_{subjects.KV_BATCH_IDS}": 30 * DAY,
        f"KV_{subjects.KV_BUDGETS}": 8 * DAY,
    }
    seconds = kept.get(name)
    return None if seconds is None else seconds / DAY


async def per_task(tasks: int) -> dict[str, float]:
    settings = NatsSettings()
    figures: dict[str, float] = {}
    with stack(processing_seconds=2, BATCHER_MAX_WAIT_SECONDS="1") as s:
        async with BatchbusClient(s.nats.url, "storage") as client:
            await client.publish_many(tickets(tasks))
            await gather_results(client, tasks, timeout=600)
        nc = await nats.connect(s.nats.url)
        infos = await nc.jetstream().streams_info()
        await nc.close()
    print(f"{'stream':<26} {'msgs/task':>9} {'bytes/task':>10} {'kept':>9} "
          f"{'GB at 1M tasks/day':>19}")
    for info in sorted(infos, key=lambda i: i.config.name or ""):
        name = info.config.name or "?"
        days = retention_days(name, settings)
        per = info.state.bytes / tasks
        steady = per * 1e6 * days / 1e9 if days is not None else float("nan")
        kept = f"{days:g} d" if days is not None else UNTIL.get(name, "until purged")
        print(f"{name:<26} {info.state.messages / tasks:>9.2f} {per:>10.0f} {kept:>9} "
              f"{steady:>19.2f}")
        figures[f"bytes_per_task_{name}"] = per
    return figures


async def subject_memory() -> dict[str, float]:
    """nats-server RSS per subject held in a KV bucket with one subject per key."""
    store = tempfile.mkdtemp(prefix="batchbus-bench-subjects-")
    server = start_nats(store)
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        kv = await streams.task_ids_bucket(js, NatsSettings(url=server.url))
        before = rss_mb(server.process.pid) * 1024
        pending = []
        for _ in range(KEYS):
            pending.append(kv.put(f"acme.{uuid.uuid4().hex}", b"1"))
            if len(pending) == 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        after = rss_mb(server.process.pid) * 1024
        await nc.close()
    finally:
        server.stop()
        shutil.rmtree(store, ignore_errors=True)
    per_subject = (after - before) * 1024 / KEYS
    print(f"\nnats-server RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB for {KEYS:,} keys: "
          f"{per_subject:.0f} bytes a subject; 7 days at 1M tasks a day = "
          f"{per_subject * 7e6 / 1e9:.2f} GB")
    return {"server_bytes_per_subject": per_subject}


async def main(tasks: int) -> None:
    emit(await per_task(tasks) | await subject_memory())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=5000)
    asyncio.run(main(parser.parse_args().tasks))

"""Does batch creation slow down as retired batches pile up? 20,000 tasks in batches of 10
that end at once: batches created in the first and in the last full minute, then, once every batch is
retired, the CPU the batcher, the poller and nats-server use with nothing left to do.

    .venv/bin/python -m bench.history [--tasks 20000] [--idle-seconds 30]
"""

import argparse
import asyncio
import time

import nats
from nats.aio.msg import Msg

from batchbus.client import BatchbusClient
from batchbus.shared import streams, subjects
from batchbus.shared.models import BatchEvent
from batchbus.shared.settings import NatsSettings
from bench.common import cpu_seconds, emit, stack
from tests.integration.helpers import gather_results, ticket


async def main(tasks: int, idle: float) -> None:
    created: list[float] = []
    with stack(processing_seconds=0, BATCHER_MAX_REQUESTS="10",
               BATCHER_MAX_WAIT_SECONDS="0.2") as s:
        nc = await nats.connect(s.nats.url)

        async def on_event(msg: Msg) -> None:
            if BatchEvent.model_validate_json(msg.data).event == "submitted":
                created.append(time.monotonic())

        await nc.subscribe(subjects.BATCH_EVENTS, cb=on_event)
        async with BatchbusClient(s.nats.url, "history") as client:
            await client.publish_many(ticket(i) for i in range(tasks))
            await gather_results(client, tasks, timeout=3600)
        # Idle means every batch retired too (records go once delivered and acknowledged).
        records = await streams.batch_records(nc.jetstream(), NatsSettings(url=s.nats.url))
        for _ in range(300):  # seconds at most; the batcher retires them on its recovery round
            if not await records.all():
                break
            await asyncio.sleep(1)
        else:
            raise RuntimeError("batch records still live 300 s after the last result")
        await nc.close()
        pids = {name: s.pipeline.services[name].process.pid  # type: ignore[union-attr]
                for name in ("batcher", "poller")} | {"nats-server": s.nats.process.pid}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        await asyncio.sleep(idle)  # the idle window measured, not a wait for a condition
        idle_cpu = {name: (cpu_seconds(pid) - before[name]) / idle for name, pid in pids.items()}
    start = created[0]
    minutes = int((created[-1] - start) // 60)
    per_minute = [sum(1 for t in created if m * 60 <= t - start < (m + 1) * 60)
                  for m in range(minutes)]
    first, last = (per_minute[0], per_minute[-1]) if per_minute else (0, 0)
    print(f"{len(created)} batches in {created[-1] - start:.0f} s; created per full minute: "
          f"{per_minute}")
    print(f"last / first full minute: {last} / {first} = {last / first if first else 0:.2f} "
          "(target >= 0.8)")
    print("idle CPU, share of a core: " + ", ".join(f"{k} {v:.3f}" for k, v in idle_cpu.items())
          + f"; together {sum(idle_cpu.values()):.3f} (target < 0.02)")
    emit({"batches": len(created), "first_minute": first, "last_minute": last,
          "last_over_first": last / first if first else 0.0,
          **{f"idle_cpu_{k}": v for k, v in idle_cpu.items()}})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.idle_seconds))

"""End-to-end throughput against the machine's own one-hop JetStream ceiling.

    .venv/bin/python -m bench.throughput [--tasks 20000 100000]

Pipeline: N tasks of about 1 KB published to batchbus.tasks.<tenant> -> every final result
received, with the emulator ending batches at once. The tasks are published the way the
baseline publishes (publish_async of ready bytes), so the client's own cost is the same on
both sides. Baseline, same run, same server: one hop of N messages of the same size
(bench/one_hop.py). Prints tasks/s, the ratio pipeline / one hop, and the CPU per task
(process CPU time over the run) of each service, nats-server, the emulator and this
process (the client publishing and reading): with every core busy, their sum sets the rate.
"""

import argparse
import asyncio
import json
import os
import time

import nats

from batchbus.client import BatchbusClient
from batchbus.shared import gc_tuning, subjects
from bench.common import cpu_seconds, emit, stack
from bench.one_hop import describe, one_hop, publish_all
from tests.integration.helpers import gather_results, ticket

FILLER = "My parcel has not arrived and the tracking page shows no update. " * 12


def task(i: int) -> bytes:
    return json.dumps(ticket(i, messages=[{"role": "user", "content": f"Ticket {i}: {FILLER}"}]),
                      separators=(",", ":")).encode()


async def measure(n: int) -> dict[str, float]:
    bodies = [task(i) for i in range(n)]
    with stack(processing_seconds=0.0, BATCHER_MAX_WAIT_SECONDS="1",
               POLLER_INTERVAL_SECONDS="0.1", POLLER_MAX_INTERVAL_SECONDS="0.2") as s:
        baseline = await one_hop(s.nats.url, n, len(bodies[0]))
        pids = {name: svc.process.pid for name, svc in s.pipeline.services.items()
                if svc.process is not None}
        pids["nats-server"] = s.nats.process.pid
        pids["emulator"] = s.emulator.process.pid
        pids["bench-client"] = os.getpid()  # publishing the tasks, reading the results
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        nc = await nats.connect(s.nats.url)
        started = time.perf_counter()
        async with BatchbusClient.over(nc, "bench") as client:
            reading = asyncio.create_task(gather_results(client, n, timeout=1800))
            await publish_all(nc.jetstream(), subjects.tasks("bench"), bodies)
            await reading
        rate = n / (time.perf_counter() - started)
        used = {name: (cpu_seconds(pid) - cpu[name]) / n * 1e6 for name, pid in pids.items()}
        await nc.close()
    print(f"N={n} tasks of {len(bodies[0])} bytes")
    print(f"  baseline: {describe(baseline)}")
    print(f"  pipeline {rate:,.0f} tasks/s   ratio to one hop {rate / baseline.hop:.3f}")
    print("  CPU per task       " + ", ".join(f"{k} {v:.0f} µs" for k, v in used.items())
          + f"; all {sum(used.values()):.0f} µs")
    return {"tasks": n, "one_hop": baseline.hop, "publish_alone": baseline.publish,
            "fetch_ack_alone": baseline.fetch_ack, "pipeline": rate,
            "ratio": rate / baseline.hop, **{f"cpu_us_{k.replace('-', '_')}": v for k, v in used.items()}}


async def main(sizes: list[int]) -> None:
    # The services' collector settings here too: this process holds every task body and
    # every result it reads, and with the default thresholds the collector walked them
    # over and over (half of this process's CPU at 100,000 tasks, charged to the pipeline).
    gc_tuning.tune()
    for n in sizes:
        emit(await measure(n))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, nargs="+", default=[20_000, 100_000])
    asyncio.run(main(parser.parse_args().tasks))

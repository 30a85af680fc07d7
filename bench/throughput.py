"""End-to-end throughput against the machine's own one-hop JetStream ceiling.

    .venv/bin/python -m bench.throughput [--tasks 20000 100000]

Pipeline: N tasks of about 1 KB published to batchbus.tasks.<tenant> -> every final result
received, with the emulator ending batches at once. Baseline, same run, same server: raw
nats-py publish_async of N messages of the same size, then a pull fetch+ack of them (one
hop). Prints tasks/s, the ratio pipeline / one-hop, and each service's CPU per task.
"""

import argparse
import asyncio
import json
import time

import nats
from nats.js.api import StreamConfig

from bench.common import cpu_seconds, stack
from shared.client import BatchbusClient
from tests.integration.helpers import gather_results, ticket

FILLER = "My parcel has not arrived and the tracking page shows no update. " * 12


def task(i: int) -> dict[str, object]:
    return ticket(i, messages=[{"role": "user", "content": f"Ticket {i}: {FILLER}"}])


async def one_hop(url: str, n: int, size: int) -> float:
    """Messages per second through publish_async then pull fetch+ack."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="BENCH_ONE_HOP", subjects=["bench.one-hop"]))
    body = b"x" * size
    started = time.perf_counter()
    for start in range(0, n, 1000):
        futures = [await js.publish_async("bench.one-hop", body)
                   for _ in range(min(1000, n - start))]
        await asyncio.gather(*futures)
    psub = await js.pull_subscribe("bench.one-hop", durable="bench", stream="BENCH_ONE_HOP")
    got = 0
    while got < n:
        msgs = await psub.fetch(batch=1000, timeout=5)
        await asyncio.gather(*(m.ack() for m in msgs))
        got += len(msgs)
    rate = n / (time.perf_counter() - started)
    await js.delete_stream("BENCH_ONE_HOP")
    await nc.close()
    return rate


async def pipeline(n: int) -> None:
    with stack(processing_seconds=0.0, BATCHER_MAX_WAIT_SECONDS="1",
               POLLER_INTERVAL_SECONDS="0.1", POLLER_MAX_INTERVAL_SECONDS="0.2") as s:
        size = len(json.dumps(task(0)).encode())
        baseline = await one_hop(s.nats.url, n, size)
        pids = {name: svc.process.pid for name, svc in s.pipeline.services.items()
                if svc.process is not None}
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        async with BatchbusClient(s.nats.url, "bench") as client:
            await client.publish_many(task(i) for i in range(n))
            await gather_results(client, n, timeout=1800)
        rate = n / (time.perf_counter() - started)
        used = {name: (cpu_seconds(pid) - cpu[name]) / n * 1e6 for name, pid in pids.items()}
    print(f"N={n} tasks of {size} bytes")
    print(f"  one-hop baseline   {baseline:10,.0f} msgs/s")
    print(f"  pipeline           {rate:10,.0f} tasks/s   ratio {rate / baseline:.3f}")
    print("  CPU per task       " + ", ".join(f"{k} {v:.0f} µs" for k, v in used.items()))


async def main(sizes: list[int]) -> None:
    for n in sizes:
        await pipeline(n)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, nargs="+", default=[20_000, 100_000])
    asyncio.run(main(parser.parse_args().tasks))

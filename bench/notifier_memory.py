"""Result delivery: time and the notifier's peak memory for one batch of N results.

    .venv/bin/python -m bench.notifier_memory [--sizes 1000 100000]

Each size runs on a fresh stack, so the notifier's peak memory (VmHWM) is that run's own.
The baseline is the 1,000-result run; the target is <= 1.5x its peak for 100,000 results.
"""

import argparse
import asyncio
import subprocess
import time

import nats

from batchbus.client import BatchbusClient
from batchbus.shared import subjects
from batchbus.shared.models import BatchEvent
from bench.common import cpu_seconds, emit, peak_rss_mb, profile, stack
from tests.integration.helpers import gather_results, ticket


async def deliver(size: int, profile_seconds: int = 0) -> tuple[float, float, float, float, float]:
    """(peak MB before the batch ends, peak MB after delivery, seconds ended -> last result,
    the notifier's and nats-server's CPU seconds over the same span)."""
    with stack(processing_seconds=2.0, BATCHER_MAX_REQUESTS=str(size),
               BATCHER_MAX_WAIT_SECONDS="300", POLLER_INTERVAL_SECONDS="0.2",
               POLLER_MAX_INTERVAL_SECONDS="0.5") as s:
        notifier = s.pipeline.services["notifier"]
        assert notifier.process is not None
        ended = asyncio.get_running_loop().create_future()
        nc = await nats.connect(s.nats.url)
        spies: list[subprocess.Popen[bytes]] = []

        async def on_event(msg: nats.aio.msg.Msg) -> None:
            if BatchEvent.model_validate_json(msg.data).event == "ended" and not ended.done():
                pid = notifier.process.pid
                ended.set_result((time.monotonic(), peak_rss_mb(pid), cpu_seconds(pid),
                                  cpu_seconds(s.nats.process.pid)))
                if profile_seconds:
                    spies.append(profile(notifier.process.pid, profile_seconds, "notifier"))

        await nc.subscribe(subjects.BATCH_EVENTS, cb=on_event)
        async with BatchbusClient(s.nats.url, "bench") as client:
            await client.publish_many(ticket(i) for i in range(size))
            await gather_results(client, size, timeout=900)
        done = time.monotonic()
        ended_at, before, cpu, server_cpu = await ended
        cpu = cpu_seconds(notifier.process.pid) - cpu
        server_cpu = cpu_seconds(s.nats.process.pid) - server_cpu
        after = peak_rss_mb(notifier.process.pid)
        await nc.close()
        for spy in spies:
            spy.wait(timeout=profile_seconds + 30)
    return before, after, done - ended_at, cpu, server_cpu


async def main(sizes: list[int], profile_seconds: int) -> None:
    rows = [(size, *await deliver(size, profile_seconds)) for size in sizes]
    base = rows[0][2]
    print(f"{'results':>8} {'peak MB idle':>13} {'peak MB':>8} {'x baseline':>11} {'seconds':>8} "
          f"{'notifier CPU µs/result':>23} {'nats-server CPU µs/result':>26}")
    for size, before, after, seconds, cpu, server in rows:
        print(f"{size:>8} {before:>13.1f} {after:>8.1f} {after / base:>11.2f} {seconds:>8.1f} "
              f"{cpu / size * 1e6:>23.0f} {server / size * 1e6:>26.0f}")
    size, _, peak, seconds, cpu, server = rows[-1]
    emit({"results": size, "baseline_results": rows[0][0], "baseline_peak_mb": base,
          "peak_mb": peak, "peak_x_baseline": peak / base, "seconds": seconds,
          "results_per_s": size / seconds, "cpu_us_per_result": cpu / size * 1e6,
          "nats_server_cpu_us_per_result": server / size * 1e6})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                        help="py-spy records the notifier from the batch's end on")
    args = parser.parse_args()
    asyncio.run(main(args.sizes, args.profile))

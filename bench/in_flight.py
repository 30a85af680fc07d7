"""500,000 tasks in flight: 100 batches of 5,000 that take hours. Is every process's memory
bounded, and is the CPU near zero while nothing changes?

    .venv/bin/python -m bench.in_flight [--tasks 500000] [--batch 5000] [--quiet-seconds 60]

Real time (no scaling): the emulator takes PROCESSING (6 hours) for each batch, so every
batch is still in flight when measured. The tasks are published at once; once all 100 are
submitted (their `submitted` events), and SETTLE more seconds have passed (the poller backs
off to its 30 s ceiling while nothing changes), each service's and nats-server's CPU is
measured over a quiet window (percent of one core), with their RSS now and their peak RSS
over the whole run. nats-server holds the 500,000 tasks, their accepted copies and the
500,000 task_ids keys (each key a subject it keeps in memory, docs/production.md).
"""

import argparse
import asyncio
import time

import nats
from nats.aio.msg import Msg

from batchbus.client import BatchbusClient
from batchbus.shared import subjects
from batchbus.shared.models import BatchEvent
from bench.common import cpu_seconds, emit, peak_rss_mb, rss_mb, stack
from bench.soak import PROCESSES, pids, scrape, total
from tests.integration.helpers import ticket

PROCESSING = 6 * 3600.0  # seconds each batch takes in the emulator: longer than the run
SETTLE = 20.0  # seconds after the last create before the quiet window
SUBMIT_TIMEOUT = 480.0  # seconds for every batch to be created


async def main(tasks: int, batch: int, quiet: float) -> None:
    submitted: list[str] = []
    events: list[str] = []  # every batch event: none should come in the quiet window

    async def on_event(msg: Msg) -> None:
        event = BatchEvent.model_validate_json(msg.data)
        events.append(event.event)
        if event.event == "submitted":
            submitted.append(event.batch_id)

    batches = -(-tasks // batch)
    with stack(processing_seconds=PROCESSING, BATCHER_MAX_REQUESTS=str(batch)) as s:
        nc = await nats.connect(s.nats.url)
        await nc.subscribe(subjects.BATCH_EVENTS, cb=on_event)
        started = time.monotonic()
        async with BatchbusClient(s.nats.url, "inflight") as client:
            await client.publish_many(ticket(i) for i in range(tasks))
        published = time.monotonic() - started
        deadline = started + SUBMIT_TIMEOUT
        while len(submitted) < batches:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(submitted)} of {batches} batches in {SUBMIT_TIMEOUT:.0f} s")
            await asyncio.sleep(0.2)  # a check interval, not a wait for a condition of our own
        all_in = time.monotonic() - started
        await asyncio.sleep(SETTLE)  # the poller backs off; intake's and batcher's acks land
        procs = {name: pid for name, pid in pids(s).items() if name in PROCESSES}
        poller = s.pipeline.services["poller"].metrics_url
        calls_before = total(await asyncio.to_thread(scrape, poller), "batchbus_poll_calls_total")
        before, seen, t0 = {n: cpu_seconds(p) for n, p in procs.items()}, len(events), \
            time.monotonic()
        await asyncio.sleep(quiet)  # the window measured, not a wait for a condition
        after, t1 = {n: cpu_seconds(p) for n, p in procs.items()}, time.monotonic()
        metrics = await asyncio.to_thread(scrape, poller)
        rss = {n: rss_mb(p) for n, p in procs.items()}
        peak = {n: peak_rss_mb(p) for n, p in procs.items()}
        await nc.close()
    cpu = {n: (after[n] - before[n]) / (t1 - t0) * 100 for n in procs}
    polls = total(metrics, "batchbus_poll_calls_total") - calls_before
    print(f"{tasks:,} tasks in {batches} batches of {batch:,}: published in {published:.0f} s, "
          f"all batches submitted after {all_in:.0f} s; in flight (poller): "
          f"{metrics.get('batchbus_batches_in_flight', 0):.0f}; quiet window {t1 - t0:.0f} s, "
          f"batch events in it: {len(events) - seen}, poll calls in it: {polls:.0f}")
    print(f"{'process':<12} {'CPU % of a core':>16} {'RSS MB':>8} {'peak RSS MB':>12}")
    for n in procs:
        print(f"{n:<12} {cpu[n]:>16.2f} {rss[n]:>8.0f} {peak[n]:>12.0f}")
    print(f"{'together':<12} {sum(cpu.values()):>16.2f} {sum(rss.values()):>8.0f}")
    emit({"tasks": tasks, "batches": batches, "submitted_after_s": all_in, "quiet_poll_calls": polls,
          **{f"idle_cpu_pct_{n}": v for n, v in cpu.items()},
          **{f"rss_mb_{n}": v for n, v in rss.items()},
          **{f"peak_rss_mb_{n}": v for n, v in peak.items()}})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--quiet-seconds", type=float, default=60.0)
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.batch, args.quiet_seconds))

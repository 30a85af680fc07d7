"""Polling cost: poll calls a minute with 200 and 500 batches in flight, and how soon each
batch's end is noticed.

    .venv/bin/python -m bench.polling_cost [--scale 0.25] [--quiet-minutes 3] [--batches 200 500]

The issue's targets: with 200 batches in flight under 100 poll calls a minute, with 500 under
150, and every batch's end noticed within 60 s. The poller runs its default schedule (a sweep
every 10 s while batches appear or end, backing off to 30 s while nothing changes, at most 60
calls a minute), time-scaled: --scale multiplies both intervals and divides the call budget,
so a minute below takes 60 x scale real seconds. Every figure is in scaled time.

Each N gets a fresh stack. N one-request batches (BATCHER_MAX_REQUESTS=1) are created as fast
as the batcher goes; the emulator takes the same processing time for each, sized so that all
N are in flight together for at least --quiet-minutes before the first ends (longer when
creates outpace CREATES_PER_SECOND). They then end in the
order and at the pace they were created. Phases, from the batches' events on NATS:
creating (first to last `submitted`), in flight (last `submitted` to the first batch's end,
nothing ends), ending (to the last `ended`). The lag of an end is the `ended` event's arrival
less the API's ended_at. The baseline is the old schedule's floor: one retrieve per batch
every 10 s, N x 6 calls a minute.
"""

import argparse
import asyncio
import math
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats
from nats.aio.msg import Msg

from batchbus.client import BatchbusClient
from batchbus.shared import subjects
from batchbus.shared.models import BatchEvent
from bench.common import emit, stack
from tests.integration.helpers import ticket

FLOOR, CEILING, CALLS_PER_MINUTE = 10.0, 30.0, 60.0  # the poller's defaults
OLD_LOOKS_PER_MINUTE = 60.0 / FLOOR  # one retrieve per batch at the old 10 s floor
# One-request batches the batcher creates a second, at the least: ~10 measured on this 2-core
# machine under load. The faster creates go, the longer all batches are in flight together.
CREATES_PER_SECOND = 5.0
MARGIN = 1.0  # real seconds: the quiet window closes this long before the first end
TARGETS = {200: 100.0, 500: 150.0}  # calls a minute, from the issue
MAX_LAG = 60.0  # seconds, from the issue


def poll_calls(metrics_url: str) -> dict[str, float]:
    """The poller's API calls so far, by endpoint (list, retrieve)."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    prefix = 'batchbus_poll_calls_total{endpoint="'
    calls = {"list": 0.0, "retrieve": 0.0}
    for line in text.splitlines():
        if line.startswith(prefix):
            calls[line[len(prefix):].split('"', 1)[0]] = float(line.split()[-1])
    return calls


@dataclass
class Watch:
    """The batches' submitted and ended events, as they arrive."""

    created: dict[str, datetime] = field(default_factory=dict)  # batch id -> API created_at
    submitted: list[float] = field(default_factory=list)  # arrival, monotonic
    ended: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # real seconds, ended_at -> event arrival

    async def on_event(self, msg: Msg) -> None:
        event = BatchEvent.model_validate_json(msg.data)
        if event.event == "submitted" and event.created_at and event.batch_id not in self.created:
            self.created[event.batch_id] = event.created_at
            self.submitted.append(time.monotonic())
        elif event.event == "ended" and event.ended_at:
            self.lags.append((datetime.now(UTC) - event.ended_at).total_seconds())
            self.ended.append(time.monotonic())


@dataclass
class Phase:
    name: str
    seconds: float  # real
    calls: dict[str, float]


async def wait_for(events: list[float], count: int, timeout: float, what: str) -> float:
    """Until `events` has `count` entries; the monotonic time of the last."""
    deadline = time.monotonic() + timeout
    while len(events) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {len(events)} of {count} in {timeout:.0f}s")
        await asyncio.sleep(0.05)  # a check interval, not a wait for a condition of our own
    return events[count - 1]


async def one_run(n: int, scale: float, quiet_minutes: float) -> tuple[list[Phase], list[float]]:
    """The phases of N batches in flight, and each end's lag (real seconds)."""
    processing = n / CREATES_PER_SECOND + quiet_minutes * 60 * scale + 2 * MARGIN
    watch = Watch()
    with stack(processing_seconds=processing, BATCHER_MAX_REQUESTS="1",
               BATCHER_MAX_WAIT_SECONDS="0.05", POLLER_INTERVAL_SECONDS=str(FLOOR * scale),
               POLLER_MAX_INTERVAL_SECONDS=str(CEILING * scale),
               POLLER_MAX_CALLS_PER_MINUTE=str(CALLS_PER_MINUTE / scale)) as s:
        url = s.pipeline.services["poller"].metrics_url
        nc = await nats.connect(s.nats.url)
        await nc.subscribe(subjects.BATCH_EVENTS, cb=watch.on_event)
        async with BatchbusClient(s.nats.url, f"bench-{n}") as client:
            await client.publish_many(ticket(i) for i in range(n))
        all_in = await wait_for(watch.submitted, n, processing, "batches created")
        at_all_in = await asyncio.to_thread(poll_calls, url)
        first_end = min(watch.created.values()).timestamp() + processing
        if watch.ended or time.time() > first_end - MARGIN:
            raise RuntimeError(f"the first batch ended before all {n} were created: "
                               f"creates are slower than {CREATES_PER_SECOND}/s here")
        await asyncio.sleep(first_end - MARGIN - time.time())
        quiet_end, at_quiet_end = time.monotonic(), await asyncio.to_thread(poll_calls, url)
        if watch.ended:
            raise RuntimeError("a batch ended in the quiet window")
        done = await wait_for(watch.ended, n, processing + CEILING * scale + 60, "ends noticed")
        at_done = await asyncio.to_thread(poll_calls, url)
        await nc.close()
    phases = [Phase("creating", all_in - watch.submitted[0], at_all_in),
              Phase("in flight", quiet_end - all_in, minus(at_quiet_end, at_all_in)),
              Phase("ending", done - quiet_end, minus(at_done, at_quiet_end)),
              Phase("overall", done - watch.submitted[0], at_done)]
    return phases, watch.lags


def minus(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a[k] - b[k] for k in a}


def per_minute(calls: float, seconds: float, scale: float) -> float:
    return calls / (seconds / scale / 60)


async def main(scale: float, quiet_minutes: float, sizes: list[int]) -> None:
    print(f"poller: sweeps every {FLOOR:.0f}-{CEILING:.0f} s, <= {CALLS_PER_MINUTE:.0f} calls/min; "
          f"time scale {scale} (a minute takes {60 * scale:.0f} s real); figures in scaled time")
    print(f"{'batches':>7} {'phase':>10} {'minutes':>8} {'list':>6} {'retrieve':>9} {'calls/min':>10}")
    figures: dict[str, float] = {}
    for n in sizes:
        started = time.monotonic()
        phases, lags = await one_run(n, scale, quiet_minutes)
        for phase in phases:
            print(f"{n:>7} {phase.name:>10} {phase.seconds / scale / 60:>8.2f} "
                  f"{phase.calls['list']:>6.0f} {phase.calls['retrieve']:>9.0f} "
                  f"{per_minute(sum(phase.calls.values()), phase.seconds, scale):>10.1f}")
        quiet, overall = phases[1], phases[3]
        in_flight = per_minute(sum(quiet.calls.values()), quiet.seconds, scale)
        old_floor = n * OLD_LOOKS_PER_MINUTE
        lag, median_lag = max(lags) / scale, sorted(lags)[len(lags) // 2] / scale
        met = in_flight < TARGETS.get(n, math.inf) and lag <= MAX_LAG
        print(f"{n:>7} in flight: {in_flight:.1f} calls/min (target < {TARGETS.get(n, math.inf):.0f}; "
              f"old schedule's floor, a retrieve per batch every {FLOOR:.0f} s: {old_floor:.0f}/min)")
        print(f"{n:>7} largest lag after an end {lag:.1f} s (target <= {MAX_LAG:.0f}; median "
              f"{median_lag:.1f} s); {sum(overall.calls.values()) / n:.3f} calls per batch; "
              f"{'met' if met else 'NOT met'} ({time.monotonic() - started:.0f} s real)")
        figures |= {
            f"calls_per_min_{n}_in_flight": in_flight,
            f"list_calls_per_min_{n}_in_flight": per_minute(quiet.calls["list"], quiet.seconds, scale),
            f"calls_per_min_{n}_overall": per_minute(sum(overall.calls.values()), overall.seconds,
                                                     scale),
            f"old_floor_calls_per_min_{n}": old_floor,
            f"max_end_lag_s_{n}": lag,
            f"calls_per_batch_{n}": sum(overall.calls.values()) / n,
        }
    emit(figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--quiet-minutes", type=float, default=3.0,
                        help="scaled minutes all batches are in flight with none ending")
    parser.add_argument("--batches", type=int, nargs="+", default=[200, 500])
    args = parser.parse_args()
    asyncio.run(main(args.scale, args.quiet_minutes, args.batches))

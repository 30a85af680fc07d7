"""Soak: 30 simulated days at a steady rate. Do per-task and idle costs, latencies, memory and
stored sizes stay flat as history piles up? Day 1, day 8 and day 30 side by side.

    .venv/bin/python -m bench.soak [--days 30] [--tasks-per-day 20000] [--batch 100 1000]

Choices (issue 13, item 5):
- Time. The emulator's clock runs SCALE = 3,600 times real time: a simulated hour takes a
  real second, 30 days 12 minutes. Every service timer that stands for simulated time is
  scaled with it: the retentions (NATS_*_MAX_AGE_SECONDS, NATS_TASK_IDS_TTL_SECONDS: 7-8 days
  are 168-192 real seconds, so streams reach their steady state on day 8), the notifier's
  retry back-off, the Models API refresh. Three cannot follow at 3,600x and are set apart:
  the poller sweeps at POLLER_SCALE = 40x (10-30 s -> 0.25-0.75 s; at 3,600x a sweep would be
  due every 3 ms), the batcher's max wait is 0.25 s (15 simulated minutes, so a wave
  published at once makes one batch) and its recovery round runs every second (a simulated
  hour; a retired record waits for it). Fixed ones stay fixed: batch_ids keeps keys 30 real
  days and a retired batch record's marker lives a real day (shared/records.py), so both
  grow for the whole run; budgets are not configured, so the budgets bucket stays empty.
- Volume. 200,000 tasks a day would be 280 tasks a real second on top of everything else on
  2 shared cores, so the rate is scaled down (default 20,000 a day) and batches with it:
  waves of 100-1,000 tasks (BATCHER_MAX_REQUESTS=1000), evenly spread over each day. A wave's
  batch takes 10 minutes to 24 hours (log-uniform); EXPIRE_SHARE of them would take 25-40
  hours and expire at 24 (their unfinished requests come back as expired and are retried);
  RETRY_SHARE of tasks fail once with a transient error (`emulate:errored:overloaded_error:
  first=1`) and succeed on the retry. Results stay in their stream and are not read.
- Figures per day, from day start to day end: each process's CPU per task, where a task is
  what that process handled that day (intake: tasks received; batcher: requests submitted;
  notifier and poller: result lines settled; nats-server: the mean of received and settled),
  so the first day's batches still running at its end do not flatter it; CPU per idle
  second over a quiet window after days 1, 8 and 30 (no publishing; the emulator's clock
  stopped, so nothing ends; batches stay in flight and the poller keeps sweeping them);
  flush latency (no histogram exists: a wave's last publish -> its batch's `submitted` event,
  the 0.25 s max wait included); poll-tick latency (no histogram exists either: a batch's
  ended_at -> its `ended` event, and the poller's CPU per sweep); API calls per batch and
  per minute (emulator /_emulator/stats); RSS of each process at day end; bytes and
  messages of every stream, bucket and object store at day end; and the client CPU of one
  listing of the batches bucket's keys, as the poller and the batcher make whenever the
  bucket changed (it grows with the retired markers kept).
- CPU is read from each process's CPU-time clock (nanoseconds), not /proc/<pid>/stat's
  10 ms ticks. Context, printed and not judged: the other processes' load on the machine
  (/proc/stat less ours), a canary's CPU for the same small work every quarter second (the
  shared machine's speed changes by tens of per cent from hour to hour; per-task CPU follows
  it), the batches bucket's keys.
- Ratios: day 30 / day 1 for all; stored sizes and nats-server's RSS (which holds every
  subject of the 7-day task_ids bucket) only reach their steady state on day 8, so for them
  day 30 / day 8 is the test. Both ratios are printed for every figure.
"""

import argparse
import asyncio
import json
import math
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from batchbus.client import BatchbusClient
from batchbus.shared import subjects
from batchbus.shared.models import BatchEvent
from batchbus.shared.records import KV_STREAM, KV_SUBJECTS
from bench.common import Stack, cpu_seconds, emit, rss_mb, stack
from tests.integration.helpers import ticket

SCALE = 3600.0  # simulated seconds per real second
POLLER_SCALE = 40.0  # the poller's schedule: its simulated seconds per real second
DAY = 24 * 3600.0
MAX_WAIT = 0.25  # real seconds: BATCHER_MAX_WAIT_SECONDS
EXPIRE_SHARE = 0.05  # of batches, that would run 25-40 h and so expire at 24 h
RETRY_SHARE = 0.03  # of tasks, that fail once with a transient error
TRANSIENT = "emulate:errored:overloaded_error:first=1"
SETTLE, QUIET = 2.0, 15.0  # real seconds: before a quiet window, and the window
PROCESSES = ("intake", "batcher", "poller", "notifier", "nats-server")
TOLERANCE = 1.2


def scaled_env(max_requests: int) -> dict[str, str]:
    """The services' environment in simulated time (see the module's docstring)."""
    sim = {"NATS_RESULTS_MAX_AGE_SECONDS": 7 * DAY, "NATS_TASK_IDS_TTL_SECONDS": 7 * DAY,
           "NATS_INTERNAL_MAX_AGE_SECONDS": 8 * DAY, "NATS_PAYLOADS_MAX_AGE_SECONDS": 8 * DAY,
           "NOTIFIER_RETRY_DELAY_SECONDS": 30.0, "NOTIFIER_RETRY_MAX_DELAY_SECONDS": 900.0,
           "INTAKE_MODELS_REFRESH_SECONDS": 3600.0, "NATS_RETIRED_MARKER_TTL_SECONDS": DAY}
    return {name: f"{value / SCALE:.4f}" for name, value in sim.items()} | {
        "POLLER_INTERVAL_SECONDS": str(10 / POLLER_SCALE),
        "POLLER_MAX_INTERVAL_SECONDS": str(30 / POLLER_SCALE),
        "POLLER_MAX_CALLS_PER_MINUTE": str(60 * POLLER_SCALE),
        "BATCHER_MAX_REQUESTS": str(max_requests), "BATCHER_MAX_WAIT_SECONDS": str(MAX_WAIT),
        "BATCHER_RECOVERY_INTERVAL_SECONDS": "1"}


def machine_busy() -> float:
    """CPU seconds every process on the machine has used since boot (/proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / 100  # less idle and iowait; USER_HZ 100


# A child process that does the same small piece of pure-Python work every quarter second and
# prints when and how much CPU it took: how fast the shared machine runs, day by day (its
# speed varies with what else runs on the host, which /proc/stat does not show).
CANARY = """
import sys, time
while True:
    start = time.thread_time_ns()
    sorted(str(i * 7919 % 10007) for i in range(20_000))
    print(time.monotonic(), (time.thread_time_ns() - start) / 1e6, flush=True)
    time.sleep(0.25)
"""


@contextmanager
def canary() -> Iterator[Path]:
    out = Path(tempfile.mkdtemp(prefix="batchbus-soak-")) / "canary.txt"
    with out.open("w") as stdout:
        child = subprocess.Popen([sys.executable, "-c", CANARY], stdout=stdout)
    try:
        yield out
    finally:
        child.kill()
        child.wait()


def canary_ms(out: Path, start: float, end: float) -> float:
    """The canary's median milliseconds between two monotonic times."""
    times = [float(ms) for at, ms in (line.split() for line in out.read_text().splitlines()
                                      if line.count(" ") == 1) if start <= float(at) < end]
    return quantile(times, 0.5)


def pids(s: Stack) -> dict[str, int]:
    found = {name: svc.process.pid for name, svc in s.pipeline.services.items() if svc.process}
    return found | {"nats-server": s.nats.process.pid, "emulator": s.emulator.process.pid}


def scrape(url: str) -> dict[str, float]:
    """A Prometheus text page as {series with labels: value}."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def total(metrics: dict[str, float], name: str) -> float:
    """The sum of every series of `name` (all its labels)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def emulator_call(url: str, path: str, body: dict[str, Any] | None = None,
                  method: str = "GET") -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


@dataclass
class Snapshot:
    at: float  # monotonic
    cpu: dict[str, float]
    rss: dict[str, float]
    metrics: dict[str, dict[str, float]]  # service -> series -> value
    calls: dict[str, float]  # the emulator's, by operation
    stores: dict[str, tuple[int, int]]  # stream -> bytes, messages
    busy: float  # CPU seconds of the whole machine
    listing_ms: float  # client CPU to list the batches bucket's keys, as the poller does
    keys: int  # of the batches bucket, retired markers included
    own: float = field(default_factory=time.process_time)  # this process's CPU seconds


async def snapshot(s: Stack, js: JetStreamContext) -> Snapshot:
    procs = pids(s)
    metrics = {name: await asyncio.to_thread(scrape, svc.metrics_url)
               for name, svc in s.pipeline.services.items()}
    stats = await asyncio.to_thread(emulator_call, s.emulator.url, "/_emulator/stats")
    stores = {i.config.name or "?": (i.state.bytes, i.state.messages) for i in await js.streams_info()}
    start = time.thread_time_ns()
    info = await js.stream_info(KV_STREAM, subjects_filter=KV_SUBJECTS + ">")
    listing = (time.thread_time_ns() - start) / 1e6
    return Snapshot(time.monotonic(), {n: cpu_seconds(p) for n, p in procs.items()},
                    {n: rss_mb(p) for n, p in procs.items()}, metrics, stats["calls"], stores,
                    machine_busy(), listing, len(info.state.subjects or {}))


@dataclass
class Wave:
    day: int
    at: float  # simulated seconds since the start
    size: int
    processing: float  # simulated seconds the emulator takes for its batch
    started: float = 0.0  # monotonic, when its publishing began
    published: float = 0.0  # monotonic, when its last PubAck came
    flushed: float | None = None  # monotonic, its batch's `submitted` event


def plan(days: int, per_day: int, low: int, high: int, rng: random.Random) -> list[Wave]:
    waves: list[Wave] = []
    for day in range(1, days + 1):
        sizes: list[int] = []
        while sum(sizes) < per_day:
            sizes.append(min(rng.randint(low, high), per_day - sum(sizes)))
        for j, size in enumerate(sizes):
            at = (day - 1 + (j + 0.5) / len(sizes)) * DAY
            processing = rng.uniform(25, 40) * 3600 if rng.random() < EXPIRE_SHARE \
                else math.exp(rng.uniform(math.log(600), math.log(DAY)))
            waves.append(Wave(day, at, size, processing))
    return waves


@dataclass
class Watch:
    """Batch events as they arrive, and the emulator's clock against ours."""

    submitted: list[tuple[float, int]] = field(default_factory=list)  # arrival, requests
    ended: list[tuple[float, float]] = field(default_factory=list)  # arrival, lag (real s)
    marks: list[tuple[float, float, float]] = field(default_factory=list)  # mono, emulated, scale

    async def on_event(self, msg: Msg) -> None:
        event = BatchEvent.model_validate_json(msg.data)
        now = time.monotonic()
        if event.event == "submitted":
            self.submitted.append((now, event.request_counts.get("processing", 0)))
        elif event.event == "ended" and event.ended_at is not None:
            self.ended.append((now, now - self.real(event.ended_at.timestamp())))

    def real(self, emulated: float) -> float:
        """The monotonic time at which the emulator's clock read `emulated`."""
        for mono, at, scale in reversed(self.marks):
            if scale > 0 and at <= emulated:
                return mono + (emulated - at) / scale
        mono, at, scale = self.marks[0]
        return mono + (emulated - at) / scale

    async def mark(self, url: str, scale: float) -> None:
        """Notes the emulator's clock now (after a change of its scale)."""
        before = time.monotonic()
        now = await asyncio.to_thread(emulator_call, url, "/_emulator/advance", {"seconds": 0},
                                      "POST")
        emulated = datetime.fromisoformat(now["now"].replace("Z", "+00:00")).timestamp()
        self.marks.append(((before + time.monotonic()) / 2, emulated, scale))


def tasks(first: int, size: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    for n in range(first, first + size):
        yield ticket(n, metadata={"user_id": TRANSIENT}) if rng.random() < RETRY_SHARE else ticket(n)


@dataclass
class Day:
    number: int
    start: Snapshot
    end: Snapshot
    waves: list[Wave]
    lags: list[float]  # real seconds from a batch's end to its `ended` event, this day
    idle: dict[str, float] = field(default_factory=dict)  # share of a core, quiet window
    quiet_events: int = 0  # batch events during the quiet window (should be none)
    canary: float = math.nan  # canary_ms() over the day


def quantile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else math.nan


def cpu_per_task(day: Day) -> dict[str, float]:
    """Microseconds of CPU per task each process handled that day (see the docstring)."""
    a, b = day.start, day.end

    def grew(service: str, name: str) -> float:
        return total(b.metrics[service], name) - total(a.metrics[service], name)

    received = grew("intake", "batchbus_tasks_received_total")
    settled = grew("notifier", "batchbus_results_total") + grew("notifier", "batchbus_retries_total")
    handled = {"intake": received, "batcher": grew("batcher", "batchbus_batch_requests_sum"),
               "poller": settled, "notifier": settled, "nats-server": (received + settled) / 2}
    return {f"cpu_us_per_task_{p}": (b.cpu[p] - a.cpu[p]) / n * 1e6 if n else math.nan
            for p, n in handled.items()}


def api_figures(day: Day) -> dict[str, float]:
    """API calls per batch (creates per batch created; downloads and polls per batch ended)
    and per minute, and the poller's CPU per sweep."""
    a, b = day.start, day.end
    calls = {op: b.calls[op] - a.calls[op] for op in b.calls}
    created = total(b.metrics["batcher"], "batchbus_batches_submitted_total") \
        - total(a.metrics["batcher"], "batchbus_batches_submitted_total")
    polls = total(b.metrics["poller"], "batchbus_poll_calls_total") \
        - total(a.metrics["poller"], "batchbus_poll_calls_total")
    sweeps = total(b.metrics["poller"], "batchbus_poll_sweeps_total") \
        - total(a.metrics["poller"], "batchbus_poll_sweeps_total")
    ended, minutes = len(day.lags), (b.at - a.at) / 60
    per_batch = calls["create"] / created + (calls["results"] + polls) / ended \
        if created and ended else math.nan
    return {"api_calls_per_batch": per_batch,
            "api_calls_per_real_minute": sum(calls.values()) / minutes,
            "poll_calls_per_poller_minute": polls / minutes / POLLER_SCALE,
            "poller_cpu_ms_per_sweep": (b.cpu["poller"] - a.cpu["poller"]) / sweeps * 1e3
            if sweeps else math.nan}


# Printed, not judged: the machine's state, and what explains other figures.
CONTEXT = ("others_cores", "canary_ms", "kv_batches_keys", "idle_cpu_others")


def context(day: Day) -> dict[str, float]:
    """The machine's load by other processes (cores), the canary's CPU, and the keys the
    poller lists every time the batches bucket changes."""
    a, b = day.start, day.end
    ours = sum(b.cpu.values()) - sum(a.cpu.values()) + b.own - a.own
    return {"others_cores": (b.busy - a.busy - ours) / (b.at - a.at),
            "canary_ms": day.canary, "kv_batches_keys": float(b.keys)}


def figures(day: Day) -> dict[str, float]:
    flush = [w.flushed - w.published for w in day.waves if w.flushed is not None]
    found = {**context(day), **cpu_per_task(day),
             **{f"idle_cpu_{p}": v for p, v in day.idle.items()},
             "flush_ms_median": quantile(flush, 0.5) * 1e3,
             "flush_ms_p95": quantile(flush, 0.95) * 1e3,
             "end_noticed_ms_median": quantile(day.lags, 0.5) * 1e3,
             "end_noticed_ms_p95": quantile(day.lags, 0.95) * 1e3,
             **api_figures(day), "kv_batches_listing_ms": day.end.listing_ms,
             **{f"rss_mb_{p}": day.end.rss[p] for p in PROCESSES}}
    for name, (size, messages) in sorted(day.end.stores.items()):
        found[f"mb_{name}"], found[f"msgs_{name}"] = size / 1e6, float(messages)
    return found


def match_flushes(waves: list[Wave], submitted: list[tuple[float, int]]) -> None:
    """A wave's batch: the first `submitted` event after its publishing began with at least
    its requests (retries may join it), before the next wave began."""
    for wave, after in zip(waves, [*waves[1:], None], strict=True):
        limit = after.started if after is not None else math.inf
        wave.flushed = next((t for t, size in submitted
                             if wave.started <= t < limit and size >= wave.size), None)


def set_emulator(url: str, **config: float) -> None:
    emulator_call(url, "/_emulator/config", config, "PUT")


async def quiet_window(s: Stack, watch: Watch) -> tuple[dict[str, float], int, float]:
    """Stops the emulator's clock, lets the pipeline settle, and measures each process's CPU
    (share of a core) over QUIET seconds; the events seen meanwhile and the real seconds the
    clock stood still."""
    began = time.monotonic()
    await asyncio.to_thread(set_emulator, s.emulator.url, time_scale=0)
    await watch.mark(s.emulator.url, 0)
    await asyncio.sleep(SETTLE)  # results of the last ends delivered, retries batched
    procs = pids(s)
    events = len(watch.submitted) + len(watch.ended)
    before, busy, own = {n: cpu_seconds(p) for n, p in procs.items()}, machine_busy(), \
        time.process_time()
    t0 = time.monotonic()
    await asyncio.sleep(QUIET)  # the window measured, not a wait for a condition
    after, t1 = {n: cpu_seconds(p) for n, p in procs.items()}, time.monotonic()
    others = machine_busy() - busy - (time.process_time() - own) \
        - sum(after[n] - before[n] for n in procs)
    events = len(watch.submitted) + len(watch.ended) - events
    await asyncio.to_thread(set_emulator, s.emulator.url, time_scale=SCALE)
    await watch.mark(s.emulator.url, SCALE)
    idle = {n: (after[n] - before[n]) / (t1 - t0) for n in PROCESSES} | {"others": others / (t1 - t0)}
    return idle, events, time.monotonic() - began


async def simulate(args: argparse.Namespace) -> list[Day]:
    rng = random.Random(args.seed)
    waves = plan(args.days, args.tasks_per_day, args.batch[0], args.batch[1], rng)
    quiet_days = {1, min(8, args.days), args.days}
    watch, days, first = Watch(), [], 0
    with canary() as probe, stack(processing_seconds=600, **scaled_env(args.batch[1])) as s:
        nc = await nats.connect(s.nats.url)
        js = nc.jetstream()
        await nc.subscribe(subjects.BATCH_EVENTS, cb=watch.on_event)
        await asyncio.to_thread(set_emulator, s.emulator.url, time_scale=SCALE)
        await watch.mark(s.emulator.url, SCALE)
        origin = time.monotonic()
        async with BatchbusClient(s.nats.url, "soak") as client:
            for number in range(1, args.days + 1):
                start, todays = await snapshot(s, js), [w for w in waves if w.day == number]
                for wave in todays:
                    await asyncio.sleep(max(0.0, origin + wave.at / SCALE - time.monotonic()))
                    await asyncio.to_thread(set_emulator, s.emulator.url,
                                            processing_seconds=wave.processing)
                    wave.started = time.monotonic()
                    first += await client.publish_many(tasks(first, wave.size, rng))
                    wave.published = time.monotonic()
                await asyncio.sleep(max(0.0, origin + number * DAY / SCALE - time.monotonic()))
                end = await snapshot(s, js)
                day = Day(number, start, end, todays,
                          [lag for t, lag in watch.ended if start.at <= t < end.at])
                day.canary = canary_ms(probe, start.at, end.at)
                if number in quiet_days:
                    day.idle, day.quiet_events, paused = await quiet_window(s, watch)
                    origin += paused
                days.append(day)
                print(progress(day), flush=True)
        await nc.close()
        match_flushes(waves, watch.submitted)
    return days


def progress(day: Day) -> str:
    f = figures(day)
    return (f"day {day.number:>2}: {sum(w.size for w in day.waves):,} tasks in {len(day.waves)} "
            f"waves, {len(day.lags)} batches ended; in flight "
            f"{day.end.metrics['poller'].get('batchbus_batches_in_flight', 0):.0f}; CPU us/task "
            + " ".join(f"{p} {f[f'cpu_us_per_task_{p}']:.0f}" for p in PROCESSES)
            + f"; RSS nats {day.end.rss['nats-server']:.0f} MB; others {f['others_cores']:.2f} "
            f"cores; canary {day.canary:.1f} ms")


def retention_bound(name: str) -> bool:
    """Figures that grow until the 7-8 day retentions are full: judged day 30 / day 8."""
    return name.startswith(("mb_", "msgs_")) or name == "rss_mb_nats-server"


def ratio(last: float, first: float) -> float:
    if math.isnan(last) or math.isnan(first):
        return math.nan
    if first == 0:
        return 1.0 if last == 0 else math.inf
    return last / first


def report(days: list[Day], args: argparse.Namespace) -> None:
    first, last = days[0], days[-1]
    middle = days[min(8, len(days)) - 1]
    f1, f8, fn = figures(first), figures(middle), figures(last)
    n = last.number
    print(f"\nscale: {args.tasks_per_day:,} tasks a simulated day in batches of {args.batch[0]:,}-"
          f"{args.batch[1]:,}; a simulated hour = 1 real second (poller: {POLLER_SCALE:.0f}x); "
          f"quiet windows {QUIET:.0f} s, batch events in them: day 1 {first.quiet_events}, "
          f"day {n} {last.quiet_events}")
    print(f"{'figure':<40} {'day 1':>10} {f'day {middle.number}':>10} {f'day {n}':>10} "
          f"{f'{n}/1':>7} {f'{n}/{middle.number}':>7}  verdict")
    out: dict[str, float] = {}
    above = []
    for name in fn:
        r1, r8 = ratio(fn[name], f1.get(name, math.nan)), ratio(fn[name], f8.get(name, math.nan))
        judged = r8 if retention_bound(name) else r1
        verdict = "ok" if judged <= TOLERANCE or math.isnan(judged) else "ABOVE 1.2"
        if name in CONTEXT:
            verdict = "context"
        elif verdict != "ok":
            above.append(name)
        print(f"{name:<40} {f1.get(name, math.nan):>10.4g} {f8.get(name, math.nan):>10.4g} "
              f"{fn[name]:>10.4g} {r1:>7.2f} {r8:>7.2f}  {verdict}"
              + (f" (day {n}/{middle.number})" if retention_bound(name) else ""))
        out |= {f"{name}_day1": f1.get(name, math.nan), f"{name}_day{middle.number}":
                f8.get(name, math.nan), f"{name}_day{n}": fn[name], f"{name}_ratio": judged}
    print(f"above {TOLERANCE}: {', '.join(above) if above else 'none'}")
    emit({k: v for k, v in out.items() if math.isfinite(v)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--tasks-per-day", type=int, default=20_000)
    parser.add_argument("--batch", type=int, nargs=2, default=[100, 1000], metavar=("MIN", "MAX"))
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    started = time.monotonic()
    days = asyncio.run(simulate(args))
    report(days, args)
    print(f"{time.monotonic() - started:.0f} s real")


if __name__ == "__main__":
    main()

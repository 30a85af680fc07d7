"""The per-message cost of consuming through faststream 0.7.8 against the runtime batchbus uses.

    .venv/bin/python -m bench.faststream_consume [--messages 20000] [--size 1000] [--rounds 3]

One nats-server; N messages of `size` bytes stored in a stream up front; then each variant
reads all of them through a durable pull consumer of its own (explicit acks, every message
acked one by one) in a fresh child process:

- runtime: batchbus.shared.consumer.pull + fetch(psub, 500, timeout=1.0), what the services run;
- nats-py: nats-py's own psub.fetch(500, timeout=1.0) on the same consumer setup;
- faststream-batch: a NatsBroker subscriber with PullSub(batch_size=500, timeout=1.0, batch=True)
  and AckPolicy.MANUAL, acking each raw message of the batch;
- faststream-pull: the same with batch=False (each message handled in a task of its own);
- faststream-pull-autoack: batch=False with AckPolicy.ACK and a handler that takes only the body:
  faststream acks, and no `Context` parameter is resolved (fast-depends runs a Context's
  sync `use` in a worker thread, once per handler call).

The brokers log at DEBUG, as shared/broker.py sets it, so faststream's per-message log lines
stay out. The child times from creating its consumer to the last ack (wall clock, and
time.process_time for the CPU of the whole process; with autoack, to the handler's last
return, just before faststream's last ack). It then checks that every stream sequence was
handled once, on its first delivery (autoack: the count), and that the server delivered N
messages, counted N acks and has nothing pending, unacknowledged or redelivered. The
variants run one after the other, `--rounds` times in turn; the table gives each variant's
median. The machine is shared, so compare variants within one run.

    .venv/bin/python -m bench.faststream_consume --timeout-bug

shows the timeout problem of docs/faststream.md instead: which exceptions nats-py's fetch
raises on an empty stream while the event loop is busy (a bare TimeoutError, raised at
nats/js/client.py's `raise asyncio.TimeoutError`, escapes faststream's
`except nats.errors.TimeoutError`), and how many trickled messages a faststream batch
subscriber drops from a batch it was collecting, to reach its handler only on redelivery
after AckWait.
"""

import argparse
import asyncio
import json
import logging
import random
import statistics
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import Annotated

import nats
from faststream import AckPolicy, Context
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage, NatsMessage
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, StreamConfig

from batchbus.launcher.nats_server import start_nats
from batchbus.shared import consumer
from bench.common import emit

STREAM, SUBJECT = "BENCH_CONSUME", "bench.consume"
BATCH, FETCH_TIMEOUT = 500, 1.0  # messages per pull, seconds a pull may wait
PUBLISH_WINDOW = 1000  # publishes in flight while filling the stream
CHILD_TIMEOUT = 300.0  # seconds a variant may take; it is killed after that
SETTLE_TIMEOUT = 10.0  # seconds for the server to count the last acks
TRICKLE_WINDOW = 0.25  # seconds a faststream batch collects for (--timeout-bug): many windows
VARIANTS = ("runtime", "nats-py", "faststream-batch", "faststream-pull", "faststream-pull-autoack")


@dataclass(frozen=True)
class Run:
    variant: str
    messages: int
    wall: float  # seconds, consumer creation to last ack
    cpu: float  # seconds of process CPU over the same span

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.messages * 1e6

    @property
    def rate(self) -> float:
        return self.messages / self.wall


def consumer_config() -> ConsumerConfig:
    """The same for every variant: explicit acks (the default), nothing redelivered during
    the run, and room for one fetched batch and the next."""
    return ConsumerConfig(ack_wait=60, max_deliver=-1, max_ack_pending=4 * BATCH)


class Tally:
    """Every message seen: its stream sequence, delivered once and on its first delivery
    (only counted when the handler does not see the message)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.sequences: set[int] = set()
        self.seen = 0
        self.done = asyncio.Event()
        self.finished_at = (0.0, 0.0)  # perf_counter, process_time at the last ack
        self.failure = ""  # set, with `done`, by a redelivery (a handler's exception would be lost)

    async def ack(self, msg: Msg) -> None:
        meta = msg.metadata
        if meta.num_delivered != 1:
            self.failure = f"stream seq {meta.sequence.stream} delivered {meta.num_delivered}x"
            self.done.set()
        self.sequences.add(meta.sequence.stream)
        await msg.ack()
        self.count(1)

    def count(self, handled: int) -> None:
        self.seen += handled
        if self.seen == self.expected:
            self.finished_at = (time.perf_counter(), time.process_time())
            self.done.set()

    def check(self, with_sequences: bool) -> None:
        wanted = set(range(1, self.expected + 1)) if with_sequences else set()
        if self.failure:
            raise AssertionError(self.failure)
        if self.seen != self.expected or self.sequences != wanted:
            raise AssertionError(f"{self.seen} messages seen, {len(self.sequences)} distinct, "
                                 f"{self.expected} expected")


async def settled(js: JetStreamContext, durable: str, n: int) -> None:
    """Waits until the server has counted every ack: N deliveries (a redelivery would count
    too), nothing pending, unacknowledged or redelivered."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        info = await js.consumer_info(STREAM, durable)
        if (info.num_ack_pending, info.num_pending, info.ack_floor.stream_seq) == (0, 0, n):
            if info.num_redelivered or info.delivered.consumer_seq != n:
                raise AssertionError(f"{info.delivered.consumer_seq} deliveries, "
                                     f"{info.num_redelivered} redelivered")
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not all acked: {info}")
        await asyncio.sleep(0.05)


BatchMessage = Annotated[NatsBatchMessage, Context("message")]
OneMessage = Annotated[NatsMessage, Context("message")]
Fetch = Callable[[JetStreamContext.PullSubscription], Awaitable[list[Msg]]]


async def runtime_fetch(psub: JetStreamContext.PullSubscription) -> list[Msg]:
    return await consumer.fetch(psub, BATCH, timeout=FETCH_TIMEOUT)


async def natspy_fetch(psub: JetStreamContext.PullSubscription) -> list[Msg]:
    try:
        return await psub.fetch(BATCH, timeout=FETCH_TIMEOUT)
    except TimeoutError:  # the builtin: nats-py raises its own subclass or, at times, the bare one
        return []


async def consume_raw(nc: Client, durable: str, tally: Tally, fetch: Fetch) -> None:
    async with consumer.pull(nc.jetstream(), SUBJECT, durable, STREAM, consumer_config()) as psub:
        while not tally.done.is_set():
            for msg in await fetch(psub):
                await tally.ack(msg)


async def consume_faststream(url: str, durable: str, tally: Tally, variant: str) -> NatsBroker:
    """A connected broker whose one subscriber acks every message; broker.start() starts it."""
    broker = NatsBroker(url, log_level=logging.DEBUG)
    stream = JStream(STREAM, declare=False)
    batch, autoack = variant == "faststream-batch", variant.endswith("autoack")
    pull_sub = PullSub(batch_size=BATCH, timeout=FETCH_TIMEOUT, batch=batch)
    subscriber = broker.subscriber(SUBJECT, stream=stream, durable=durable, pull_sub=pull_sub,
                                   config=consumer_config(),
                                   ack_policy=AckPolicy.ACK if autoack else AckPolicy.MANUAL)

    async def handle_batch(bodies: list[bytes], msg: BatchMessage) -> None:
        for raw in msg.raw_message:
            await tally.ack(raw)

    async def handle(body: bytes, msg: OneMessage) -> None:
        await tally.ack(msg.raw_message)

    async def handle_body(body: bytes) -> None:
        tally.count(1)

    subscriber(handle_batch if batch else handle_body if autoack else handle)
    await broker.connect()
    return broker


async def child(variant: str, url: str, durable: str, n: int) -> Run:
    """One variant's run, in this (fresh) process."""
    tally = Tally(n)
    nc = await nats.connect(url)
    broker: NatsBroker | None = None
    try:
        if variant.startswith("faststream"):
            broker = await consume_faststream(url, durable, tally, variant)
            started = (time.perf_counter(), time.process_time())
            await broker.start()  # creates the consumer and starts its pull loop
            await asyncio.wait_for(tally.done.wait(), CHILD_TIMEOUT)
            await broker.connection.flush()
        else:
            fetch = runtime_fetch if variant == "runtime" else natspy_fetch
            started = (time.perf_counter(), time.process_time())
            await consume_raw(nc, durable, tally, fetch)
            await nc.flush()
        (wall_end, cpu_end), (wall_start, cpu_start) = tally.finished_at, started
        tally.check(with_sequences=not variant.endswith("autoack"))
        await settled(nc.jetstream(), durable, n)
    finally:
        if broker is not None:
            await broker.stop()
        await nc.close()
    return Run(variant, n, wall_end - wall_start, cpu_end - cpu_start)


async def fill(url: str, n: int, size: int) -> None:
    """A fresh stream holding N messages of `size` bytes."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT]))
    body = b"x" * size
    for start in range(0, n, PUBLISH_WINDOW):
        window = range(start, min(n, start + PUBLISH_WINDOW))
        futures = [await js.publish_async(SUBJECT, body) for _ in window]
        await asyncio.gather(*futures)
    await nc.close()


def run_child(variant: str, url: str, durable: str, n: int) -> Run:
    """One variant in a fresh process: its imports, loop and heap are its own."""
    done = subprocess.run([sys.executable, "-m", "bench.faststream_consume", "--child", variant,
                           "--url", url, "--durable", durable, "--messages", str(n)],
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
    return Run(**json.loads(done.stdout.splitlines()[-1]))


def median_runs(runs: Sequence[Run]) -> Run:
    return Run(runs[0].variant, runs[0].messages, statistics.median(r.wall for r in runs),
               statistics.median(r.cpu for r in runs))


def report(rounds: list[list[Run]]) -> dict[str, float]:
    by_variant = {v: median_runs([r for round_ in rounds for r in round_ if r.variant == v])
                  for v in VARIANTS}
    base = by_variant["runtime"]
    print(f"\n{'variant':<25}{'CPU µs/msg':>12}{'msgs/s':>10}{'CPU x runtime':>15}   runs (CPU µs/msg)")
    for v, med in by_variant.items():
        each = ", ".join(f"{r.cpu_us:.0f}" for round_ in rounds for r in round_ if r.variant == v)
        print(f"{v:<25}{med.cpu_us:>12.1f}{med.rate:>10,.0f}{med.cpu_us / base.cpu_us:>15.2f}   {each}")
    figures: dict[str, float] = {}
    for v, med in by_variant.items():
        key = v.replace("-", "_")
        figures[f"{key}_cpu_us"] = round(med.cpu_us, 1)
        figures[f"{key}_msgs_per_s"] = round(med.rate)
    return figures


async def busy(stop: asyncio.Event) -> None:
    """Keeps the event loop busy in slices of up to 3 ms, as handlers and other loops do."""
    while not stop.is_set():
        end = time.perf_counter() + random.uniform(0, 0.003)
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0)


async def empty_fetches(js: JetStreamContext, tries: int, timeout: float) -> Counter[str]:
    """What psub.fetch(500) raises on an empty stream with a busy loop, by class and line."""
    await js.add_stream(StreamConfig(name="BENCH_EMPTY", subjects=["bench.empty"]))
    psub = await js.pull_subscribe("bench.empty", durable="empty", stream="BENCH_EMPTY")
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()
    hog = asyncio.create_task(busy(stop))
    for _ in range(tries):
        try:
            outcomes[f"returned {len(await psub.fetch(BATCH, timeout=timeout))}"] += 1
        except Exception as exc:
            lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
                     if f.filename.endswith("nats/js/client.py")]
            outcomes[f"{type(exc).__module__}.{type(exc).__qualname__} at nats/js/client.py:{lines[-1]}"] += 1
    stop.set()
    await hog
    return outcomes


async def trickled(url: str, js: JetStreamContext, n: int, spacing: float) -> tuple[int, int, float]:
    """A faststream batch subscriber (500 or 0.25 s, ack_wait 3 s) fed a message every `spacing`
    seconds, the loop busy: messages handled, those handled only on a redelivery, the longest
    publish to handle."""
    await js.add_stream(StreamConfig(name="BENCH_TRICKLE", subjects=["bench.trickle"]))
    broker = NatsBroker(url, log_level=logging.DEBUG)
    published: dict[int, float] = {}
    handled: dict[int, float] = {}
    redelivered: set[int] = set()
    all_in = asyncio.Event()

    @broker.subscriber("bench.trickle", stream=JStream("BENCH_TRICKLE", declare=False), durable="trickle",
                       pull_sub=PullSub(batch_size=BATCH, timeout=TRICKLE_WINDOW, batch=True),
                       config=ConsumerConfig(ack_wait=3), ack_policy=AckPolicy.MANUAL)
    async def handle(bodies: list[bytes], msg: BatchMessage) -> None:
        for raw in msg.raw_message:
            seq = raw.metadata.sequence.stream
            handled.setdefault(seq, time.monotonic())
            if raw.metadata.num_delivered > 1:
                redelivered.add(seq)
            await raw.ack()
        if len(handled) == n:
            all_in.set()

    await broker.start()
    stop = asyncio.Event()
    hog = asyncio.create_task(busy(stop))
    try:
        for _ in range(n):
            published[(await js.publish("bench.trickle", b"x")).seq] = time.monotonic()
            await asyncio.sleep(spacing)
        with suppress(TimeoutError):  # a message lost for good shows as one not handled
            await asyncio.wait_for(all_in.wait(), 30)
    finally:
        stop.set()
        await hog
        await broker.stop()
    return len(handled), len(redelivered), max(handled[s] - published[s] for s in handled)


async def timeout_bug(url: str) -> dict[str, float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        tries, timeout = 200, 0.05
        outcomes = await empty_fetches(js, tries, timeout)
        print(f"nats-py fetch({BATCH}, timeout={timeout}) on an empty stream, busy loop, {tries} tries:")
        for outcome, count in outcomes.most_common():
            print(f"  {count:4} {outcome}")
        n, spacing = 500, 0.01
        handled, redelivered, worst = await trickled(url, js, n, spacing)
        print(f"faststream batch subscriber (PullSub(500, timeout={TRICKLE_WINDOW}, batch=True)), busy loop, "
              f"{n} messages {spacing * 1000:.0f} ms apart: "
              f"{handled} handled, "
              f"{redelivered} of them only on redelivery (after AckWait 3 s); "
              f"longest publish to handler {worst:.1f} s")
    finally:
        await nc.close()
    bare = sum(c for o, c in outcomes.items() if o.startswith("builtins.TimeoutError"))
    return {"bare_timeouts": bare, "fetches": tries, "trickled": handled, "redelivered": redelivered,
            "worst_latency_s": round(worst, 2)}


def main(n: int, size: int, rounds: int) -> dict[str, float]:
    server = start_nats()
    try:
        asyncio.run(fill(server.url, n, size))
        print(f"{n:,} messages of {size} B stored; variants in fresh processes, {rounds} round(s)")
        results: list[list[Run]] = []
        for round_ in range(rounds):
            results.append([])
            for variant in VARIANTS:
                run = run_child(variant, server.url, f"{variant}-{round_}", n)
                results[-1].append(run)
                print(f"round {round_ + 1} {variant:<25} wall {run.wall:6.3f} s  CPU {run.cpu:6.3f} s  "
                      f"{run.cpu_us:6.1f} µs/msg  {run.rate:8,.0f} msgs/s", flush=True)
        return report(results)
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout-bug", action="store_true",
                        help="show faststream's batch-pull timeout problem instead")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--durable", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asdict(asyncio.run(child(args.child, args.url, args.durable, args.messages)))))
    elif args.timeout_bug:
        server = start_nats()
        try:
            emit(asyncio.run(timeout_bug(server.url)))
        finally:
            server.stop()
    else:
        emit(main(args.messages, args.size, args.rounds))

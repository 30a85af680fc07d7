"""The one-hop JetStream baseline every benchmark compares against, measured in the same run.

    .venv/bin/python -m bench.one_hop [--messages 20000] [--size 1000]

One hop is raw nats-py: `publish_async` of N messages into a stream and a pull `fetch`+`ack`
of them. The hop runs the way the pipeline runs its hops: the publisher (this process) and the
consumer (a child process) work at the same time, and the rate is N over the time from the
first publish to the last ack. Each stage alone (publish everything, then fetch+ack
everything, in one process) is measured too: those are the issue's per-stage ceilings, and
N over their summed times is what the old, sequential baseline reported.
"""

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import nats
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from batchbus.launcher.nats_server import start_nats

WINDOW = 1000  # publishes in flight, and messages per fetch
CONSUMER_TIMEOUT = 120.0  # seconds the child may take; it is killed after that


@dataclass(frozen=True)
class OneHop:
    publish: float  # msgs/s, publish_async alone
    fetch_ack: float  # msgs/s, fetch+ack alone
    sequential: float  # msgs/s, publish all then consume all
    hop: float  # msgs/s, publisher and consumer at once: THE baseline


async def publish_all(js: JetStreamContext, subject: str, bodies: Sequence[bytes]) -> None:
    """publish_async with up to WINDOW acks outstanding."""
    for start in range(0, len(bodies), WINDOW):
        futures = [await js.publish_async(subject, body) for body in bodies[start:start + WINDOW]]
        await asyncio.gather(*futures)


async def consume_all(psub: JetStreamContext.PullSubscription, n: int) -> None:
    got = 0
    while got < n:
        try:
            msgs = await psub.fetch(batch=WINDOW, timeout=1)
        except TimeoutError:  # nothing yet: the publisher is behind
            continue
        await asyncio.gather(*(m.ack() for m in msgs))
        got += len(msgs)


async def _stream(js: JetStreamContext, name: str) -> str:
    subject = f"bench.{name.lower()}"
    await js.add_stream(StreamConfig(name=name, subjects=[subject]))
    return subject


async def _stages(js: JetStreamContext, n: int, body: bytes) -> tuple[float, float]:
    subject = await _stream(js, "BENCH_STAGES")
    started = time.perf_counter()
    await publish_all(js, subject, [body] * n)
    published = time.perf_counter()
    await consume_all(await js.pull_subscribe(subject, durable="bench", stream="BENCH_STAGES"), n)
    done = time.perf_counter()
    await js.delete_stream("BENCH_STAGES")
    return published - started, done - published


async def _hop(url: str, js: JetStreamContext, n: int, body: bytes) -> float:
    subject = await _stream(js, "BENCH_HOP")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.one_hop", "--consume", url, "--messages", str(n),
        stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    try:
        ready = await asyncio.wait_for(child.stdout.readline(), CONSUMER_TIMEOUT)
        if ready.strip() != b"ready":
            raise RuntimeError("one-hop consumer did not start")
        started = time.monotonic()  # CLOCK_MONOTONIC: the same clock in the child
        await publish_all(js, subject, [body] * n)
        last_ack = float(await asyncio.wait_for(child.stdout.readline(), CONSUMER_TIMEOUT))
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
    await js.delete_stream("BENCH_HOP")
    return last_ack - started


async def one_hop(url: str, n: int, size: int) -> OneHop:
    """The baseline on the server at `url`, for N messages of `size` bytes."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    body = b"x" * size
    try:
        publish, fetch = await _stages(js, n, body)
        hop = await _hop(url, js, n, body)
    finally:
        await nc.close()
    return OneHop(n / publish, n / fetch, n / (publish + fetch), n / hop)


async def _consumer(url: str, n: int) -> None:
    nc = await nats.connect(url)
    psub = await nc.jetstream().pull_subscribe("bench.bench_hop", durable="bench",
                                               stream="BENCH_HOP")
    print("ready", flush=True)
    await consume_all(psub, n)
    print(time.monotonic(), flush=True)
    await nc.close()


def describe(base: OneHop) -> str:
    return (f"one hop {base.hop:,.0f} msgs/s (publish_async alone {base.publish:,.0f}, "
            f"fetch+ack alone {base.fetch_ack:,.0f}, one after the other {base.sequential:,.0f})")


async def _main(n: int, size: int) -> None:
    server = start_nats()
    try:
        print(describe(await one_hop(server.url, n, size)))
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--consume", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        asyncio.run(_consumer(args.consume, args.messages))
    else:
        asyncio.run(_main(args.messages, args.size))

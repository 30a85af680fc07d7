"""nats-server's memory under a KV bucket that turns over, as `task_ids` does: keys written at
a steady rate with a TTL, so the bucket holds rate x TTL keys once full and as many expire as
arrive. Prints the key count and the server's RSS every 15 s.

    .venv/bin/python -m bench.kv_churn [--rate 2000] [--ttl 60] [--seconds 360]

It answers the soak's question (docs/benchmarks.md): does the server's memory keep growing
with a full bucket, or settle? The baseline is the RSS when the bucket first becomes full.
"""

import argparse
import asyncio
import tempfile
import time

import nats
from nats.js.api import KeyValueConfig

from batchbus.launcher.nats_server import start_nats
from bench.common import emit, rss_mb


async def main(rate: int, ttl: float, seconds: float) -> None:
    server = start_nats(tempfile.mkdtemp(prefix="batchbus-churn-"))
    readings: list[tuple[float, int, float]] = []
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.create_key_value(config=KeyValueConfig(bucket="churn", ttl=ttl, history=1))
        start, written, next_reading = time.monotonic(), 0, 15.0
        while (elapsed := time.monotonic() - start) < seconds:
            tick = time.monotonic()
            acks = [await js.publish_async(f"$KV.churn.t.task{written + i}", b"12345")
                    for i in range(rate // 10)]
            await asyncio.gather(*acks)
            written += rate // 10
            if elapsed >= next_reading:
                next_reading += 15.0
                keys = (await js.stream_info("KV_churn")).state.messages
                readings.append((elapsed, keys, rss_mb(server.process.pid)))
                print(f"{elapsed:5.0f} s  {keys:8,} keys  nats-server RSS {readings[-1][2]:5.0f} MB",
                      flush=True)
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))  # the write rate
        await nc.close()
    finally:
        server.stop()
    full = next(r for r in readings if r[0] >= ttl)  # the first reading with the bucket full
    last_cycle = [r[2] for r in readings if r[0] >= seconds - ttl]
    print(f"RSS when full {full[2]:.0f} MB; over the last TTL {min(last_cycle):.0f}-"
          f"{max(last_cycle):.0f} MB ({max(last_cycle) / full[2]:.2f}x)")
    emit({"keys": full[1], "rss_full_mb": full[2], "rss_last_min_mb": min(last_cycle),
          "rss_last_max_mb": max(last_cycle)})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=2000, help="keys written a second")
    parser.add_argument("--ttl", type=float, default=60.0, help="the bucket's TTL, seconds")
    parser.add_argument("--seconds", type=float, default=360.0)
    args = parser.parse_args()
    asyncio.run(main(args.rate, args.ttl, args.seconds))

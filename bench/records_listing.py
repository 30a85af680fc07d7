"""Listing batch records as history grows: the per-second read of the batcher's guard and the
poller, with 20 batches in flight and 0 to 5,000 retired before them.

    .venv/bin/python -m bench.records_listing

A retired record leaves a delete marker in KV `batches`. "every key" reads each marker on each
listing (the listing before this change); "after a write" is a listing after one record
changed (markers read once, then skipped); "unchanged" is a listing with nothing written since
the last (one small request). Baseline: the bucket's `stream_info` with its subjects.
"""

import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import nats

from batchbus.launcher.nats_server import start_nats
from batchbus.shared import streams
from batchbus.shared.models import BatchRecord
from batchbus.shared.records import KV_STREAM, KV_SUBJECTS, BatchRecords
from batchbus.shared.settings import NatsSettings
from bench.common import emit

LIVE = 20
ROUNDS = 20


def record() -> BatchRecord:
    return BatchRecord(intent_id=uuid.uuid4().hex, state="submitted", requests=10, bytes=1000,
                       intent_at=datetime.now(UTC), batch_id=f"msgbatch_{uuid.uuid4().hex}")


async def timed(call: Callable[[], Awaitable[object]],
                before: Callable[[], Awaitable[object]] | None = None) -> float:
    """Median seconds of ROUNDS calls of `call` (`before` runs ahead of each, untimed)."""
    times = []
    for _ in range(ROUNDS):
        if before is not None:
            await before()
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def main() -> None:
    store = tempfile.mkdtemp(prefix="batchbus-bench-records-")
    server = start_nats(store)
    figures: dict[str, float] = {}
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        records = await streams.batch_records(js, NatsSettings(url=server.url))
        for _ in range(LIVE):
            await records.kv.create((r := record()).intent_id, r.model_dump_json().encode())
        retired = 0
        print(f"{'retired':>8} {'stream_info':>12} {'every key':>10} {'after a write':>14} "
              f"{'unchanged':>10}  (ms)")
        for target in (0, 1000, 5000):
            while retired < target:
                key = (r := record()).intent_id
                await records.kv.create(key, r.model_dump_json().encode())
                await records.kv.delete(key)
                retired += 1
            fresh = BatchRecords(js, records.kv, records.manifests)
            assert len(await fresh.all()) == LIVE  # the first listing reads every key once
            one = (await fresh.all())[0].intent_id

            async def info() -> None:
                await js.stream_info(KV_STREAM, subjects_filter=KV_SUBJECTS + ">")

            async def every_key(fresh: BatchRecords = fresh) -> None:
                fresh._gone.clear()
                fresh._listed = None
                await fresh.all()

            async def a_write(one: str = one) -> None:
                await records.transition(one, lambda r: r.model_copy(
                    update={"requests": r.requests + 1}))

            base, every = await timed(info), await timed(every_key)
            changed, unchanged = await timed(fresh.all, a_write), await timed(fresh.all)
            print(f"{retired:>8} {base * 1e3:>12.1f} {every * 1e3:>10.1f} {changed * 1e3:>14.1f} "
                  f"{unchanged * 1e3:>10.1f}")
            figures |= {f"stream_info_ms_{retired}": base * 1e3,
                        f"every_key_ms_{retired}": every * 1e3,
                        f"after_write_ms_{retired}": changed * 1e3,
                        f"unchanged_ms_{retired}": unchanged * 1e3}
        await nc.close()
    finally:
        server.stop()
        shutil.rmtree(store, ignore_errors=True)
    emit(figures)


if __name__ == "__main__":
    asyncio.run(main())

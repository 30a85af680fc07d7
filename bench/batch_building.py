"""Batch building: time and peak memory to build and send one 100,000-request batch.

    .venv/bin/python -m bench.batch_building [--requests 100000]

The batcher's own code does the work: each request is encoded (with its manifest row) when
its task is taken (Pending.of, timed here as "built"), and the submit writes the
write-ahead intent and manifest in NATS, makes the SDK's create call and the record
(services/batcher/submission.py), against the emulator running in its own process (its
reading of the body is in the POST's time, not in this process's CPU). "Built and sent"
is the sum of the two. Memory is this process's peak RSS above what it held before
the submit (the held tasks), against the body's size. Baseline, same run: the floor of any
client, the same requests encoded with `json.dumps` and POSTed as raw bytes with httpx2
(the SDK's HTTP client).
"""

import argparse
import asyncio
import gc
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from batchbus.launcher.nats_server import start_nats
from batchbus.services.batcher.metrics import BatcherMetrics
from batchbus.services.batcher.submission import Pending, Submitter
from batchbus.shared import streams, subjects
from batchbus.shared.anthropic_client import make_client
from batchbus.shared.models import AcceptedTask
from batchbus.shared.payloads import Payloads
from batchbus.shared.settings import AnthropicSettings, NatsSettings
from bench.common import KEY, emit, start_emulator

# A Messages request of ~800 bytes, so 100,000 of them are ~80 MB, the batch.
FILLER = "Where is my parcel? The tracking page has not changed for a week now. " * 8


def accepted(i: int) -> bytes:
    return AcceptedTask(
        tenant="bench", task_id=f"ticket-{i:06d}", published_at=datetime.now(UTC),
        params={"model": "claude-sonnet-4-6", "max_tokens": 64,
                "system": "Classify the support ticket: billing, shipping or other.",
                "messages": [{"role": "user", "content": f"Ticket {i}: {FILLER}"}]},
        metadata={"ticket": i}).model_dump_json().encode()


def held(nc: Client, n: int) -> tuple[list[Pending], int, float]:
    """The tasks as the collector holds them: encoded, with their message; and the seconds
    their encoding took (Pending.of, what the collector does per task beyond parsing it)."""
    items, size, building = [], 0, 0.0
    for i in range(n):
        data = accepted(i)
        # The reply subject JetStream gives a delivered message (stream seq i + 1).
        reply = f"$JS.ACK.{subjects.STREAM_INTERNAL}.batcher.1.{i + 1}.{i + 1}.{time.time_ns()}.0"
        msg = Msg(nc, subjects.accepted("bench"), reply, data)
        assert msg.metadata.sequence.stream == i + 1  # parsed once, as Collector.take does
        task = AcceptedTask.model_validate_json(data)
        started = time.perf_counter()
        item = Pending.of(msg, task)
        building += time.perf_counter() - started
        items.append(item)
        size += item.size
    return items, size, building


@contextmanager
def gc_time() -> Iterator[list[float]]:
    """CPU seconds the cyclic GC ran inside the block (in the yielded list's only item)."""
    total, started = [0.0], [0.0]

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.process_time()
        else:
            total[0] += time.process_time() - started[0]

    gc.callbacks.append(on_gc)
    try:
        yield total
    finally:
        gc.callbacks.remove(on_gc)


def rss_mb() -> float:
    return _status("VmRSS")


def peak_mb() -> float:
    return _status("VmHWM")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def _status(field: str) -> float:
    found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert found is not None
    return int(found[1]) / 1024


async def raw_post(url: str, items: list[Pending]) -> tuple[float, float]:
    """Seconds to encode the same requests with json.dumps, and then to POST the bytes
    (that is mostly the API, here the emulator, reading and storing the batch)."""
    requests = [json.loads(i.request) for i in items]  # as the SDK would be given them
    async with httpx2.AsyncClient(timeout=300) as http:
        started = time.perf_counter()
        body = json.dumps({"requests": requests}, separators=(",", ":"),
                          ensure_ascii=False).encode()
        encoded = time.perf_counter()
        response = await http.post(f"{url}/v1/messages/batches", content=body, headers={
            "x-api-key": KEY, "anthropic-version": "2023-06-01",
            "content-type": "application/json"})
        response.raise_for_status()
        return encoded - started, time.perf_counter() - encoded


async def measure(n: int) -> dict[str, float]:
    server = start_nats()
    emulator = start_emulator(processing_seconds=3600)
    url = emulator.url
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        settings = NatsSettings()
        await streams.ensure_streams(js, settings)
        items, size, built = held(nc, n)
        submitter = Submitter(
            make_client(AnthropicSettings(api_key=KEY, base_url=url), max_retries=0),
            await streams.batch_records(js, settings), await streams.batch_ids_bucket(js, settings),
            BatcherMetrics(), settle_seconds=0, create_timeout=300, stale_after=900,
            payloads=Payloads(js, settings.payloads_max_age_seconds))
        gc.collect()
        before = rss_mb()
        reset_peak()
        started, cpu = time.perf_counter(), time.process_time()
        with gc_time() as in_gc:
            record = await submitter.submit(items, size)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        peak = peak_mb() - before
        assert record.state == "submitted" and record.requests == n
        # After the submit: its garbage must not hide the submit's peak.
        encode, post = await raw_post(url, items)
        baseline = encode + post
        await nc.close()
    finally:
        emulator.stop()
        server.stop()
    body = size / 1e6
    print(f"{n} requests, body {body:.1f} MB")
    print(f"  baseline (json.dumps + raw POST) {baseline:6.2f} s   (encode {encode:.2f} s, "
          f"POST and the API's answer {post:.2f} s)")
    print(f"  batcher: built at take           {built:6.2f} s")
    print(f"  batcher: submit                  {seconds:6.2f} s   (CPU {cpu:.2f} s here, of it "
          f"cyclic GC {in_gc[0]:.2f} s)")
    print(f"  built and sent                   {built + seconds:6.2f} s   ratio "
          f"{(built + seconds) / baseline:.2f}")
    print(f"  peak memory above the held tasks {peak:6.1f} MB  = {peak / body:.2f}x the body "
          f"(held tasks {before:.0f} MB RSS)")
    return {"requests": n, "body_mb": body, "baseline_s": baseline,
            "baseline_encode_s": encode, "baseline_post_s": post, "built_s": built,
            "submit_s": seconds, "built_and_sent_s": built + seconds,
            "submit_cpu_s": cpu, "gc_s": in_gc[0],
            "ratio": (built + seconds) / baseline, "peak_mb": peak, "peak_x_body": peak / body}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100_000)
    emit(asyncio.run(measure(parser.parse_args().requests)))

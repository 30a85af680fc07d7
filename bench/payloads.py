"""Documents through batchbus: N tasks whose params (a base64 PDF block each) are far above
NATS's max_payload, stored in the tenant's payload bucket and batched split by bytes.

    .venv/bin/python -m bench.payloads [--tasks 100] [--mb 5] [--answer-tokens 300000]

Prints the creates (count and body sizes, under the API's 256 MB), the wall time from the
first publish to the last result, each service's peak memory (VmHWM) next to its memory
before the documents came, and the baseline of the same run: the time to store the same
bytes in the object store alone. With --answer-tokens, each answer is that long (the batch-only
300K beta allows up to 300,000 tokens, over 1 MB of JSON): stored apart by the notifier, read
back by the client.
"""

import argparse
import asyncio
import base64
import json
import os
import time
import urllib.request

import nats

from batchbus.client import BatchbusClient
from batchbus.shared import subjects
from batchbus.shared.payloads import Payloads, params_name
from bench.common import KEY, emit, peak_rss_mb, stack
from tests.integration.helpers import MODEL, gather_results

API_LIMIT = 256 * 1000 * 1000


BETA = "output-300k-2026-03-24"


def params(task_id: str, size: int, answer_tokens: int = 0) -> bytes:
    pdf = b"%PDF-1.7\n" + os.urandom(size * 3 // 4)
    long = {"model": "claude-opus-5-5", "max_tokens": answer_tokens, "metadata": {
        "user_id": f"emulate:succeeded:output_tokens={answer_tokens}"}} if answer_tokens else {}
    return json.dumps({"model": MODEL, "max_tokens": 64, **long, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": base64.b64encode(pdf).decode()}},
        {"type": "text", "text": f"Summarise {task_id}."}]}]}).encode()


def creates(url: str) -> list[int]:
    request = urllib.request.Request(f"{url}/_emulator/creates", headers={"x-api-key": KEY})
    with urllib.request.urlopen(request) as reply:
        return [c["body_bytes"] for c in json.load(reply)["creates"]]


async def run(tasks: int, megabytes: int, answer_tokens: int) -> None:
    size = megabytes * 1000 * 1000
    with stack(processing_seconds=1.0, BATCHER_MAX_WAIT_SECONDS="5") as s:
        pids = {name: svc.process.pid for name, svc in s.pipeline.services.items()
                if svc.process is not None}
        before = {name: peak_rss_mb(pid) for name, pid in pids.items()}
        nc = await nats.connect(s.nats.url)
        js = nc.jetstream()
        store = Payloads(js, 3600)
        # Baseline: the same bytes into the object store, nothing else running on them.
        sample = params("baseline", size)
        started = time.perf_counter()
        for i in range(tasks):
            await store.put("baseline", f"b{i}", sample)
        baseline = time.perf_counter() - started
        # The run: each document stored, then a small task naming it (docs/payloads.md).
        started = time.perf_counter()
        for i in range(tasks):
            data = params(f"doc-{i}", size, answer_tokens)
            name = params_name(f"doc-{i}", data)
            await store.put("bench", name, data)
            betas = [BETA] if answer_tokens else []
            task = json.dumps({"task_id": f"doc-{i}", "params_object": name,
                               "betas": betas}).encode()
            await js.publish(subjects.tasks("bench"), task, stream=subjects.STREAM_TASKS)
        async with BatchbusClient(s.nats.url, "bench") as client:
            found = await gather_results(client, tasks, timeout=1800)
        wall = time.perf_counter() - started
        await nc.close()
        peaks = {name: peak_rss_mb(pid) for name, pid in pids.items()}
        bodies = creates(s.emulator.url)
    ok = sum(1 for results in found.values() if results[0].status == "succeeded"
             and (not answer_tokens or results[0].message is not None))
    answers = f", answers of {answer_tokens:,} tokens" if answer_tokens else ""
    print(f"{tasks} documents of {megabytes} MB{answers}: {ok} succeeded, {len(bodies)} creates of "
          f"{', '.join(f'{b / 1e6:.0f}' for b in bodies)} MB (API limit {API_LIMIT / 1e6:.0f} MB)")
    print(f"first publish to last result {wall:.1f} s; baseline (object store puts alone) "
          f"{baseline:.1f} s")
    for name in pids:
        print(f"{name:>9}: peak RSS {peaks[name]:.0f} MB (before the documents {before[name]:.0f} MB)")
    emit({"tasks": tasks, "task_mb": megabytes, "answer_tokens": answer_tokens,
          "succeeded": ok, "creates": len(bodies),
          "largest_create_mb": max(bodies, default=0) / 1e6, "seconds": wall,
          "baseline_put_seconds": baseline}
         | {f"{name}_peak_mb": peak for name, peak in peaks.items()})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--mb", type=int, default=5)
    parser.add_argument("--answer-tokens", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(run(args.tasks, args.mb, args.answer_tokens))

"""Issue 17's acceptance: on nats-server's default max_payload (1 MB), a 20 MB task (a base64
PDF document block) asking for a 300,000-token answer (over 1 MB of JSON, the batch-only
`output-300k-2026-03-24` beta) succeeds end to end three ways: the Python client, `batchbus
submit`, and a raw nats-py publish done as docs/payloads.md says. The server refuses any
message above max_payload, so each step that passes sent nothing larger."""

import asyncio
import base64
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest

from batchbus.client import BatchbusClient
from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.shared import subjects
from batchbus.shared.models import Result
from batchbus.shared.payloads import answer_name, params_name
from tests.integration.helpers import gather_results

pytestmark = [pytest.mark.nats]

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT_BYTES = 20 * 1000 * 1000  # of base64
ANSWER_TOKENS = 300_000
BETA = "output-300k-2026-03-24"


def task(task_id: str) -> dict[str, Any]:
    pdf = b"%PDF-1.7\n" + random.Random(task_id).randbytes(DOCUMENT_BYTES * 3 // 4)
    return {"task_id": task_id, "betas": [BETA], "params": {
        "model": "claude-opus-5-5", "max_tokens": ANSWER_TOKENS,
        # The prompt's size as a 200-page PDF would have it; the answer the beta allows.
        "metadata": {"user_id": f"emulate:succeeded:input_tokens=150000:"
                                f"output_tokens={ANSWER_TOKENS}"},
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": base64.b64encode(pdf).decode()}},
            {"type": "text", "text": f"Translate {task_id} in full."}]}]}}


def check_answer(result: Result) -> None:
    assert result.status == "succeeded", result.error
    assert result.message_object == answer_name(result.task_id)  # stored apart...
    assert result.message is not None  # ...and read back by the client
    assert result.usage is not None and result.usage.output_tokens == ANSWER_TOKENS
    assert len(json.dumps(result.message)) > 1_000_000


async def test_a_20_mb_document_and_a_300k_token_answer_three_ways(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer, tenant: str,
        tmp_path: Path) -> None:
    async with BatchbusClient(nats_server.url, tenant) as client:
        assert client.nc.max_payload == 1024 * 1024  # the default, far below both payloads
        # 1. The Python client.
        async with asyncio.timeout(180):
            check_answer(await client.submit(task("by-client")))

    # 2. `batchbus submit` with a JSONL file of one 20 MB line.
    lines = tmp_path / "documents.jsonl"
    lines.write_text(json.dumps(task("by-cli")) + "\n")
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "batchbus.cli", "submit", str(lines),
                         "--tenant", tenant, "--follow", "--nats", nats_server.url],
        capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"by status\s+succeeded 1\n", done.stdout), done.stdout[-2000:]

    # 3. Raw nats-py, as docs/payloads.md shows: the params in the tenant's bucket, a small
    # task naming them, the answer read from the bucket by its name.
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        raw = task("by-nats-py")
        data = json.dumps(raw.pop("params")).encode()
        name = params_name("by-nats-py", data)
        store = await js.object_store(subjects.payloads(tenant))  # made by the first two
        await store.put(name, data)
        await js.publish(subjects.tasks(tenant), json.dumps(
            {**raw, "params_object": name}).encode(), stream=subjects.STREAM_TASKS)
    finally:
        await nc.close()
    async with BatchbusClient(nats_server.url, tenant) as client:
        found = await gather_results(client, 3, timeout=180)
    assert sorted(found) == ["by-cli", "by-client", "by-nats-py"]
    for results in found.values():
        [result] = results
        check_answer(result)
    # The params went once their final results were stored; the answers stay.
    nc = await nats.connect(nats_server.url)
    try:
        store = await nc.jetstream().object_store(subjects.payloads(tenant))
        names = {info.name for info in await store.list(ignore_deletes=True)}
    finally:
        await nc.close()
    assert names == {answer_name(t) for t in found}

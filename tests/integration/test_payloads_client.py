"""The claim check from the user's side (issue 17): the client and `batchbus submit` send a
task of several MB through the tenant's payload bucket without being asked, results whose
answer is stored apart come back whole from every client path, and params no request may
carry are refused before anything is published. On the session's server (max_payload 1 MB)."""

import asyncio
import base64
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError

from batchbus.client import BatchbusClient
from batchbus.emulator.prompt import params_hash
from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer
from batchbus.launcher.services import Pipeline
from batchbus.services.batcher.batching import custom_id
from batchbus.shared import subjects
from batchbus.shared.models import Result
from batchbus.shared.payloads import MAX_PARAMS_BYTES, Payloads, params_name
from batchbus.shared.settings import NatsSettings
from tests.integration.helpers import MODEL, stored_count, ticket

pytestmark = pytest.mark.nats

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT_BYTES = 3 * 1024 * 1024  # base64: three times the server's max_payload
# A real API counts a PDF by its pages, not its bytes; the emulator's estimate (four characters
# a token) would make 3 MB of base64 some 800,000 tokens, more than a context window holds.
# The directive sets the prompt's size as a 40-page PDF would have it.
PROMPT_TOKENS = 60_000


def document_params(name: str) -> dict[str, Any]:
    """A Messages API body with a base64 PDF document block of DOCUMENT_BYTES."""
    pdf = b"%PDF-1.7\n" + random.Random(name).randbytes(DOCUMENT_BYTES * 3 // 4)
    return {"model": MODEL, "max_tokens": 64,
            "metadata": {"user_id": f"emulate:succeeded:input_tokens={PROMPT_TOKENS}"},
            "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                "data": base64.b64encode(pdf).decode()}},
                {"type": "text", "text": f"Summarise {name} in one line."}]}]}


async def last_task(js: Any, tenant: str) -> dict[str, Any]:
    """The tenant's last task message as JetStream stored it."""
    msg = await js.get_last_msg(subjects.STREAM_TASKS, subjects.tasks(tenant))
    return dict(json.loads(msg.data or b""))


def sent_hashes(emulator: EmulatorHandle, tenant: str, task_id: str) -> list[str]:
    """The params hash of each create request that carried the task's first attempt."""
    wanted = custom_id(tenant, task_id, 1)
    return [r["params_hash"] for c in emulator.state.creates() for r in c["requests"]
            if r["custom_id"] == wanted]


async def test_the_client_sends_megabytes_of_params_by_reference(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer,
        tenant: str) -> None:
    params = document_params("report-1")
    async with BatchbusClient(nats_server.url, tenant) as client:
        assert len(json.dumps(params)) > 2 * client.nc.max_payload
        async with asyncio.timeout(90):
            result = await client.submit({"task_id": "report-1", "params": params,
                                          "metadata": {"kind": "report"}})
        sent = await last_task(client.nc.jetstream(), tenant)
    assert (result.status, result.task_id, result.metadata) == \
        ("succeeded", "report-1", {"kind": "report"}), result.error
    assert result.usage is not None and result.usage.input_tokens == PROMPT_TOKENS
    # The message named the params; the API got them exactly as given, once.
    data = json.dumps(params, separators=(",", ":")).encode()
    assert sent == {"task_id": "report-1", "params_object": params_name("report-1", data),
                    "metadata": {"kind": "report"}}
    assert sent_hashes(emulator, tenant, "report-1") == [params_hash(params)]


def batchbus(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command in its own process, as a user runs it."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NATS_", "ANTHROPIC_", "BATCHBUS_"))}
    env |= {"XDG_RUNTIME_DIR": str(cwd / "run"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "batchbus.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_batchbus_submit_sends_a_large_line_by_reference_and_follows_it(
        pipeline: Pipeline, emulator: EmulatorHandle, nats_server: NatsServer, tenant: str,
        tmp_path: Path) -> None:
    path = tmp_path / "reports.jsonl"
    big = document_params("reports.jsonl:1")
    path.write_text(json.dumps(big) + "\n" + json.dumps(ticket(2)) + "\n")
    done = batchbus("submit", path.name, "--tenant", tenant, "--nats", nats_server.url,
                    "--follow", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "by status      succeeded 2" in done.stdout
    assert "Traceback" not in done.stderr
    replayed = batchbus("results", "--tenant", tenant, "--nats", nats_server.url, "--out", "-",
                        cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    results = [Result.model_validate_json(line) for line in replayed.stdout.splitlines()]
    [bare] = [r for r in results if r.task_id.startswith("reports-000001-")]
    assert bare.status == "succeeded" and bare.metadata == {"source": "reports.jsonl", "line": 1}
    assert sent_hashes(emulator, tenant, bare.task_id) == [params_hash(big)]


async def test_params_over_32_mib_raise_one_line_and_publish_nothing(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str) -> None:
    huge = ticket(1, messages=[{"role": "user", "content": "x" * MAX_PARAMS_BYTES}])
    async with BatchbusClient(nats_server.url, tenant) as client:
        with pytest.raises(ValueError) as raised:
            await client.publish(huge)
        with pytest.raises(ValueError):
            [r async for r in client.submit_many([ticket(2), huge])]
        with pytest.raises(BucketNotFoundError):  # nothing stored either
            await client.nc.jetstream().object_store(subjects.payloads(tenant))
    message = str(raised.value)
    assert "\n" not in message and message.startswith("task 'ticket-00001': its params are ")
    assert f"{MAX_PARAMS_BYTES:,} bytes (32 MiB)" in message and "by URL" in message
    assert await stored_count(nats_server.url, subjects.tasks(tenant), subjects.STREAM_TASKS) == 0


ANSWER = {"id": "msg_large", "type": "message", "role": "assistant", "model": MODEL,
          "content": [{"type": "text", "text": "a long answer " * 100_000}],
          "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 300_000}}


async def store_answered(nc: Client, tenant: str, task_id: str, stored: bool) -> Result:
    """A final result whose answer is stored apart, as the notifier stores one too large for
    a message (`stored=False`: its object is gone)."""
    if stored:
        await Payloads(nc.jetstream(), NatsSettings().payloads_max_age_seconds).put(
            tenant, f"answer.{task_id}", json.dumps(ANSWER).encode())
    result = Result(task_id=task_id, tenant=tenant, status="succeeded", batch_id="msgbatch_1",
                    route="batch", attempts=1, message_object=f"answer.{task_id}")
    await nc.jetstream().publish(subjects.results(tenant, task_id),
                                 result.model_dump_json().encode(),
                                 stream=subjects.STREAM_RESULTS)
    return result


async def test_every_client_path_reads_a_stored_answer_back(
        pipeline: Pipeline, nats_server: NatsServer, tenant: str, tmp_path: Path) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        await store_answered(nc, tenant, "long-1", stored=True)
        await store_answered(nc, tenant, "gone-1", stored=False)
    finally:
        await nc.close()
    async with BatchbusClient(nats_server.url, tenant) as client:
        async with asyncio.timeout(60):
            replayed = {r.task_id: r async for r in client.history()}
            live = {r.task_id: r async for r in client.results(idle_timeout=1)}
            # Answered from the store, not published again.
            submitted = await client.submit(ticket(1) | {"task_id": "long-1"})
    for found in (replayed, live):
        assert found["long-1"].message == ANSWER
        assert found["long-1"].message_object == "answer.long-1"
        # A lost answer does not end the iteration: the result comes, its message null.
        assert found["gone-1"].message is None and found["gone-1"].status == "succeeded"
    assert submitted.message == ANSWER
    assert await stored_count(nats_server.url, subjects.tasks(tenant), subjects.STREAM_TASKS) == 0
    done = await asyncio.to_thread(batchbus, "results", "--tenant", tenant, "--nats",
                                   nats_server.url, "--out", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    by_id = {r.task_id: r for r in map(Result.model_validate_json, done.stdout.splitlines())}
    assert by_id["long-1"].message == ANSWER and by_id["gone-1"].message is None
    assert "gone-1" in done.stderr and "Traceback" not in done.stderr

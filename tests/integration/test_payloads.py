"""Params too large for one NATS message, end to end, on a server whose max_payload (256 KiB)
is far below them: stored in the tenant's payload bucket, checked by intake as inline params
are, streamed into creates split by bytes, and failing with a clear reason when unusable."""

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from batchbus.client import BatchbusClient
from batchbus.emulator.prompt import params_hash
from batchbus.emulator.server import EmulatorHandle
from batchbus.launcher.nats_server import NatsServer, start_nats
from batchbus.launcher.services import Pipeline
from batchbus.services.batcher.batching import custom_id
from batchbus.shared import subjects
from batchbus.shared.payloads import PayloadMissing, Payloads, params_name
from batchbus.shared.settings import NatsSettings
from tests.conftest import pipeline_env
from tests.integration.helpers import MODEL, gather_results, ticket

MAX_PAYLOAD = 256 * 1024
MAX_BYTES = 5 * 1024 * 1024  # the batcher's body limit here: two 2 MB documents a batch


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    directory = tmp_path_factory.mktemp("small-nats")
    config = directory / "server.conf"
    config.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    server = start_nats(str(directory / "store"), config=str(config))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def small_pipeline(small_server: NatsServer, emulator: EmulatorHandle,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    env = pipeline_env(small_server.url, emulator.url, BATCHER_MAX_BYTES=str(MAX_BYTES),
                       INTAKE_MAX_PARAMS_BYTES=str(3 * 1024 * 1024))
    running = Pipeline(env, Path(tmp_path_factory.mktemp("logs"))).start()
    yield running
    running.stop()


@pytest.fixture
async def nc(small_server: NatsServer) -> AsyncIterator[Client]:
    connection = await nats.connect(small_server.url)
    yield connection
    await connection.close()


def document(task_id: str, size: int) -> dict[str, Any]:
    """Params holding a base64 PDF document block of about `size` bytes."""
    pdf = b"%PDF-1.7\n" + os.urandom(size * 3 // 4)
    return {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": base64.b64encode(pdf).decode()}},
        {"type": "text", "text": f"Summarise document {task_id}."}]}]}


async def publish_stored(nc: Client, tenant: str, task_id: str, data: bytes) -> str:
    """The documented way for a raw NATS client: the params in the tenant's bucket, then a
    small task naming them."""
    name = params_name(task_id, data)
    await Payloads(nc.jetstream(), NatsSettings().payloads_max_age_seconds).put(tenant, name,
                                                                                  data)
    task = f'{{"task_id":"{task_id}","params_object":"{name}"}}'.encode()
    await nc.jetstream().publish(subjects.tasks(tenant), task, stream=subjects.STREAM_TASKS)
    return name


async def test_documents_far_above_max_payload_are_batched_split_by_bytes(
        small_pipeline: Pipeline, emulator: EmulatorHandle, nc: Client, tenant: str) -> None:
    stored = {f"doc-{i}": json.dumps(document(f"doc-{i}", 2 * 1024 * 1024)).encode()
              for i in range(5)}
    for task_id, data in stored.items():
        assert len(data) > 8 * MAX_PAYLOAD
        await publish_stored(nc, tenant, task_id, data)
    small = [ticket(i) for i in range(3)]
    async with BatchbusClient(small_pipeline.env["NATS_URL"], tenant) as client:
        await client.publish_many(small)
        found = await gather_results(client, len(stored) + len(small), timeout=120)
    assert {t: [r.status for r in rs] for t, rs in found.items()} == \
        {t: ["succeeded"] for t in [*stored, *(s["task_id"] for s in small)]}
    # Each document went once, exactly as stored, split over creates within the byte limit.
    ids = {custom_id(tenant, t, 1): t for t in stored}
    sent: dict[str, list[str]] = {}
    creates = 0
    for create in emulator.state.creates():
        mine = [r for r in create["requests"] if r["custom_id"] in ids]
        if mine:
            creates += 1
            assert create["body_bytes"] <= MAX_BYTES
        for request in mine:
            sent.setdefault(ids[request["custom_id"]], []).append(request["params_hash"])
    assert sent == {t: [params_hash(json.loads(data))] for t, data in stored.items()}
    assert creates >= 3  # 5 documents of 2 MB, at most two a create


@pytest.mark.parametrize(("content", "reason"), [
    (None, "is not in payloads_"),
    (b'{"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": [', "stored params are not valid JSON"),
    (b'["not", "an", "object"]', "stored params must be a Messages API request body"),
    (b'{"model": "claude-sonnet-4-6", "max_tokens": 64}', "params is missing messages"),
    (b"x" * (3 * 1024 * 1024 + 1), "over the limit of 3,145,728"),
])
async def test_unusable_stored_params_are_rejected_saying_why(
        small_pipeline: Pipeline, nc: Client, tenant: str, content: bytes | None,
        reason: str) -> None:
    name = "params.gone.0"
    if content is not None:
        name = await publish_stored(nc, tenant, "bad", content)
    else:
        task = f'{{"task_id":"bad","params_object":"{name}"}}'.encode()
        await nc.jetstream().publish(subjects.tasks(tenant), task, stream=subjects.STREAM_TASKS)
    async with BatchbusClient(small_pipeline.env["NATS_URL"], tenant) as client:
        found = await gather_results(client, 1, timeout=30)
    [result] = found["bad"]
    assert result.status == "rejected"
    assert result.error is not None and reason in result.error.message


async def test_a_task_with_both_params_and_params_object_is_rejected(
        small_pipeline: Pipeline, nc: Client, tenant: str) -> None:
    task = (b'{"task_id":"both","params":{"model":"claude-sonnet-4-6","max_tokens":9,'
            b'"messages":[{"role":"user","content":"hi"}]},"params_object":"x"}')
    await nc.jetstream().publish(subjects.tasks(tenant), task, stream=subjects.STREAM_TASKS)
    async with BatchbusClient(small_pipeline.env["NATS_URL"], tenant) as client:
        found = await gather_results(client, 1, timeout=30)
    [result] = found["both"]
    assert result.status == "rejected"
    assert result.error is not None and "not both" in result.error.message


async def test_params_replaced_after_intake_checked_them_are_never_sent(
        small_pipeline: Pipeline, emulator: EmulatorHandle, nc: Client, tenant: str) -> None:
    """A tenant may replace its object once intake has checked it (say, a cheap model's
    params for an expensive one's): the batcher sends only what intake checked."""
    batcher = small_pipeline.services["batcher"]
    batcher.stop()
    js = nc.jetstream()
    before = (await js.stream_info(subjects.STREAM_INTERNAL)).state.messages
    checked = json.dumps(document("swap", 300 * 1024)).encode()
    name = await publish_stored(nc, tenant, "swap", checked)
    for _ in range(300):  # intake hands the task on within a few seconds
        if (await js.stream_info(subjects.STREAM_INTERNAL)).state.messages > before:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("intake did not accept the task")
    swapped = json.dumps({**json.loads(checked), "max_tokens": 64000}).encode()
    await Payloads(js, 3600).put(tenant, name, swapped)  # same name, other params
    batcher.start()
    async with BatchbusClient(small_pipeline.env["NATS_URL"], tenant) as client:
        found = await gather_results(client, 1, timeout=30)
    [result] = found["swap"]
    assert result.status == "errored"
    assert result.error is not None and result.error.type == "payload_changed"
    assert "was replaced after intake checked it" in result.error.message
    sent = {r["custom_id"] for c in emulator.state.creates() for r in c["requests"]}
    assert custom_id(tenant, "swap", 1) not in sent


async def test_what_no_one_deletes_goes_with_the_buckets_max_age(
        small_server: NatsServer, nc: Client, tenant: str) -> None:
    """NATS_PAYLOADS_MAX_AGE_SECONDS is the bucket's max age: an answer (kept, not deleted)
    is gone after it. One second here, eight days by default."""
    payloads = Payloads(nc.jetstream(), ttl=1.0)
    await payloads.put(tenant, "answer.kept", b'{"content": []}')
    assert await payloads.read(tenant, "answer.kept") == b'{"content": []}'
    for _ in range(100):  # the server expires it within a second or two
        try:
            await payloads.read(tenant, "answer.kept")
        except PayloadMissing:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the object outlived its bucket's max age")

"""The claim check on the client's side (docs/payloads.md): which tasks go inline and which
with their params stored apart, what cannot be sent at all, and answers read back, with a
fake connection and payload store (no network)."""

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic_core import to_json

from batchbus.client import BatchbusClient
from batchbus.outgoing import Outgoing, TaskTooLarge, encode, outgoing, params_too_large
from batchbus.shared import subjects
from batchbus.shared.models import Result, Task
from batchbus.shared.payloads import HEADROOM, MAX_PARAMS_BYTES, PayloadMissing, params_name

MAX_PAYLOAD = 1024 * 1024


def task(content: str = "Where is my parcel?", **fields: Any) -> Task:
    return Task.model_validate({"task_id": "t-1", "params": {
        "model": "claude-sonnet-4-6", "max_tokens": 64,
        "messages": [{"role": "user", "content": content}]}, **fields})


def sized(size: int) -> Task:
    """A task whose inline message is exactly `size` bytes."""
    pad = size - len(encode(task("")))
    return task("x" * pad)


def test_a_task_that_fits_with_headroom_goes_inline() -> None:
    edge = sized(MAX_PAYLOAD - HEADROOM)
    planned = outgoing(edge, MAX_PAYLOAD)
    assert planned.stored is None and planned.data == encode(edge)


def test_one_byte_more_goes_by_reference_with_its_params_stored_as_compact_json() -> None:
    big = sized(MAX_PAYLOAD - HEADROOM + 1)
    planned = outgoing(big, MAX_PAYLOAD)
    assert planned.stored is not None
    name, params = planned.stored
    assert params == to_json(big.params) and json.loads(params) == big.params
    assert name == params_name("t-1", params) and name.startswith("params.t-1.")
    sent = json.loads(planned.data)
    assert sent == {"task_id": "t-1", "params_object": name}
    assert Task.model_validate(sent).params_object == name  # a valid Task, as intake reads it


def test_the_reference_keeps_every_other_field() -> None:
    big = task("x" * MAX_PAYLOAD, metadata={"ticket": 7}, route="batch", betas=["b-1"])
    sent = json.loads(outgoing(big, MAX_PAYLOAD).data)
    assert sent["metadata"] == {"ticket": 7} and sent["route"] == "batch"
    assert sent["betas"] == ["b-1"] and "params" not in sent


def test_a_task_naming_stored_params_goes_as_it_is() -> None:
    named = Task(task_id="t-1", params_object="params.t-1.abc")
    assert outgoing(named, MAX_PAYLOAD) == Outgoing(encode(named))
    heavy = named.model_copy(update={"metadata": {"notes": "n" * MAX_PAYLOAD}})
    with pytest.raises(TaskTooLarge, match="shorten its metadata"):
        outgoing(heavy, MAX_PAYLOAD)


def test_params_over_32_mib_cannot_be_sent_and_say_so_in_one_line() -> None:
    huge = task("x" * MAX_PARAMS_BYTES)
    with pytest.raises(TaskTooLarge) as raised:
        outgoing(huge, MAX_PAYLOAD)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("task 't-1': its params are 33,554,")
    assert f"limit of {MAX_PARAMS_BYTES:,} bytes (32 MiB)" in message and "by URL" in message
    assert isinstance(raised.value, ValueError)
    # Whatever the server's max_payload: the Messages API would refuse them.
    with pytest.raises(TaskTooLarge):
        outgoing(huge, 64 * 1024 * 1024)


def test_params_at_the_limit_are_fine_and_small_tasks_are_not_measured_twice() -> None:
    at_limit = task("")
    pad = MAX_PARAMS_BYTES - len(to_json(at_limit.params))
    at_limit = task("x" * pad)
    assert len(to_json(at_limit.params)) == MAX_PARAMS_BYTES
    assert params_too_large(at_limit, len(encode(at_limit))) is None
    # A task no larger than the limit cannot have params over it: its size answers.
    assert params_too_large(task("x" * 100), MAX_PARAMS_BYTES) is None


def test_a_task_too_large_even_by_reference_names_its_metadata() -> None:
    heavy = task("x" * MAX_PAYLOAD, metadata={"notes": "n" * MAX_PAYLOAD})
    with pytest.raises(TaskTooLarge, match="even with its params stored apart.*shorten its "
                                           "metadata"):
        outgoing(heavy, MAX_PAYLOAD)


@dataclass
class FakeJetStream:
    published: list[tuple[str, bytes]] = field(default_factory=list)

    async def publish(self, subject: str, payload: bytes, stream: str | None = None) -> None:
        self.published.append((subject, payload))


@dataclass
class FakeConnection:
    js: FakeJetStream = field(default_factory=FakeJetStream)
    max_payload: int = MAX_PAYLOAD

    def jetstream(self) -> FakeJetStream:
        return self.js


@dataclass
class FakePayloads:
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    puts: list[str] = field(default_factory=list)

    async def put(self, tenant: str, name: str, data: bytes) -> None:
        self.puts.append(name)
        self.objects[tenant, name] = data

    async def read(self, tenant: str, name: str, limit: int | None = None) -> bytes:
        if (tenant, name) not in self.objects:
            raise PayloadMissing(f"object {name!r} is not in payloads_{tenant}")
        return self.objects[tenant, name]


def fake_client() -> tuple[BatchbusClient, FakeJetStream, FakePayloads]:
    connection, payloads = FakeConnection(), FakePayloads()
    client = BatchbusClient.over(connection, "acme")  # type: ignore[arg-type]
    client._payloads = payloads  # type: ignore[assignment]
    return client, connection.js, payloads


async def test_publish_stores_the_params_before_the_task_that_names_them() -> None:
    client, js, payloads = fake_client()
    small, big = task(), task("x" * MAX_PAYLOAD).model_copy(update={"task_id": "t-2"})
    assert await client.publish_many([small, big.model_dump()]) == 2
    [name] = payloads.puts
    assert json.loads(payloads.objects["acme", name]) == big.params
    sent = {json.loads(data)["task_id"]: json.loads(data) for _, data in js.published}
    assert sent["t-1"]["params"] == small.params
    assert sent["t-2"] == {"task_id": "t-2", "params_object": name}
    assert {subject for subject, _ in js.published} == {subjects.tasks("acme")}


async def test_publish_of_params_over_the_limit_raises_and_sends_nothing() -> None:
    client, js, payloads = fake_client()
    with pytest.raises(ValueError, match="over the Messages API's request size limit"):
        await client.publish(task("x" * MAX_PARAMS_BYTES))
    assert js.published == [] and payloads.puts == []


async def test_submit_many_checks_every_task_before_publishing_any() -> None:
    client, js, payloads = fake_client()
    tasks = [task(), task("x" * MAX_PARAMS_BYTES).model_copy(update={"task_id": "t-2"})]
    with pytest.raises(ValueError, match="task 't-2': its params are"):
        [r async for r in client.submit_many(tasks)]
    assert js.published == [] and payloads.puts == []


def result(**fields: Any) -> Result:
    return Result.model_validate({"task_id": "t-1", "tenant": "acme", "status": "succeeded",
                                  **fields})


async def test_an_answer_stored_apart_is_read_back_and_its_name_kept() -> None:
    client, _, payloads = fake_client()
    answer = {"id": "msg_1", "type": "message", "role": "assistant",
              "content": [{"type": "text", "text": "y" * 100}]}
    payloads.objects["acme", "answer.t-1"] = json.dumps(answer).encode()
    read = await client.with_answer(result(message_object="answer.t-1"))
    assert read.message == answer and read.message_object == "answer.t-1"
    inline = result(message=answer)
    assert await client.with_answer(inline) is inline  # nothing to read


async def test_a_missing_answer_leaves_the_message_null_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    client, _, _ = fake_client()
    with caplog.at_level(logging.WARNING, "batchbus.client"):
        read = await client.with_answer(result(message_object="answer.t-1"))
    assert read.message is None and read.message_object == "answer.t-1"
    [record] = caplog.records
    assert "t-1" in record.getMessage() and "\n" not in record.getMessage()

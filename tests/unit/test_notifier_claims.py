"""The notifier's claim checks (services/notifier/claims.py) over an in-memory bucket: which
answers are stored apart, what the Result then says, and what happens to stored params."""

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from batchbus.services.notifier.claims import ClaimChecks, answer_bytes
from batchbus.services.notifier.delivery import result_raw
from batchbus.services.notifier.realtime import realtime_result
from batchbus.services.notifier.results import (
    Final,
    fallback_task,
    refused_attempt,
    result_fields,
    stored_answer,
    with_model,
)
from batchbus.shared import subjects
from batchbus.shared.models import AcceptedTask, ManifestEntry, Result, ResultFields
from batchbus.shared.payloads import (
    HEADROOM,
    PayloadChanged,
    PayloadMissing,
    Stored,
    digest_of,
    params_name,
)
from batchbus.shared.pricing import default_prices
from batchbus.shared.publishing import result_message

MAX_PAYLOAD = 8 * 1024
USAGE = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0,
         "cache_read_input_tokens": 0}


class Bucket:
    """Payloads as the notifier uses them, in memory; `fail` makes every put fail."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.puts: list[tuple[str, str, bytes]] = []
        self.fail = False

    async def put(self, tenant: str, name: str, data: bytes) -> Stored:
        if self.fail:
            raise TimeoutError("no JetStream acknowledgement in time")
        self.puts.append((tenant, name, data))
        self.objects[tenant, name] = data
        return Stored(name, len(data), digest_of(data))

    async def read(self, tenant: str, name: str, limit: int | None = None,
                   digest: str | None = None) -> bytes:
        if (tenant, name) not in self.objects:
            raise PayloadMissing(f"object {name!r} is not in payloads_{tenant}")
        data = self.objects[tenant, name]
        if digest is not None and digest_of(data) != digest:
            raise PayloadChanged(f"object {name!r} was replaced")
        return data

    async def delete(self, tenant: str, name: str) -> bool:
        return self.objects.pop((tenant, name), None) is not None


def claims(bucket: Bucket, max_payload: int = MAX_PAYLOAD) -> ClaimChecks:
    js = SimpleNamespace(_nc=SimpleNamespace(max_payload=max_payload))
    return ClaimChecks(cast(Any, js), cast(Any, bucket))


def message(text_bytes: int) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
            "content": [{"type": "text", "text": "é" * (text_bytes // 2)}],
            "stop_reason": "end_turn", "stop_sequence": None, "usage": USAGE}


def fields(task_id: str, final: Final, metadata: dict[str, Any] | None = None) -> ResultFields:
    entry = ManifestEntry(custom_id=f"c-{task_id}", tenant="acme", task_id=task_id, attempt=1,
                          model="claude-sonnet-4-6", metadata=metadata or {},
                          published_at=datetime(2026, 11, 27, tzinfo=UTC), accepted_seq=1)
    return result_fields(entry, final, "msgbatch_1", default_prices())


def task(**extra: Any) -> AcceptedTask:
    return AcceptedTask.model_validate({
        "tenant": "acme", "task_id": "t-1", "params": {"model": "claude-opus-5-5"},
        "published_at": datetime(2026, 11, 27, tzinfo=UTC), **extra})


async def test_only_results_too_large_for_a_message_store_their_answer() -> None:
    bucket = Bucket()
    small = fields("small", Final("succeeded", message=message(100)))
    large = fields("large", Final("succeeded", message=message(MAX_PAYLOAD)))
    # Too large without an answer: nothing to store apart, published as it is (and refused
    # by NATS, as before).
    heavy = fields("heavy", Final("errored"), metadata={"blob": "x" * MAX_PAYLOAD})
    out = await claims(bucket).published([small, large, heavy])
    assert out[0] == (small, result_raw(small, None).payload)
    assert out[2] == (heavy, result_raw(heavy, None).payload)
    published, data = cast(tuple[ResultFields, bytes], out[1])
    assert (published["message"], published["message_object"]) == (None, "answer.large")
    assert len(data) + HEADROOM <= MAX_PAYLOAD
    # The bytes a Result model of the same fields would publish, and the answer kept whole.
    expected = result_message(Result.model_validate(published),
                              subjects.result_msg_id("acme", "large"))
    assert result_raw(published, None, data) == expected
    assert bucket.puts == [("acme", "answer.large", answer_bytes(large["message"] or {}))]
    assert json.loads(bucket.objects["acme", "answer.large"]) == large["message"]
    # Everything else of the result is the same: its usage and cost were counted from it.
    assert {k: v for k, v in published.items() if k not in ("message", "message_object")} \
        == {k: v for k, v in large.items() if k not in ("message", "message_object")}


async def test_a_replay_stores_the_same_bytes_under_the_same_name() -> None:
    bucket = Bucket()
    large = fields("large", Final("succeeded", message=message(MAX_PAYLOAD)))
    first = await claims(bucket).published([large])
    again = await claims(bucket).published([large])
    assert first == again
    assert bucket.puts[0] == bucket.puts[1]


async def test_a_failed_store_fails_only_its_own_result() -> None:
    bucket = Bucket()
    bucket.fail = True
    small = fields("small", Final("succeeded", message=message(100)))
    large = fields("large", Final("succeeded", message=message(MAX_PAYLOAD)))
    out = await claims(bucket).published([large, small])
    assert isinstance(out[0], TimeoutError)
    assert out[1] == (small, result_raw(small, None).payload)


async def test_a_real_time_result_stores_its_answer_the_same_way() -> None:
    bucket = Bucket()
    checks = claims(bucket)
    final = realtime_result(task(), "succeeded", 1, default_prices(),
                            message=message(MAX_PAYLOAD))
    published = await checks.result(final)
    assert (published.message, published.message_object) == (None, "answer.t-1")
    assert published.usage == final.usage and published.cost == final.cost
    assert json.loads(bucket.objects["acme", "answer.t-1"]) == final.message
    small = realtime_result(task(), "succeeded", 1, default_prices(), message=message(100))
    assert await checks.result(small) is small


def test_stored_answer_fields_make_the_results_bytes() -> None:
    final = fields("t-1", Final("succeeded", message=message(100)))
    slim = stored_answer(final, "answer.t-1")
    model = Result.model_validate(slim)
    assert result_raw(slim, "crm") == result_message(model, subjects.result_msg_id(
        "acme", "t-1"), "crm")
    assert list(json.loads(result_raw(slim, None).payload)) == list(Result.model_fields)
    assert final["message"] is not None  # the original is left as it was


async def test_a_real_time_call_sends_the_stored_params_on_the_tasks_model() -> None:
    bucket = Bucket()
    stored = {"model": "claude-opus-5-5", "max_tokens": 10, "messages": [
        {"role": "user", "content": "ü" * 100}]}
    bucket.objects["acme", "params.t-1.x"] = json.dumps(stored).encode()
    checks = claims(bucket)
    on_fallback = task(params={"model": "claude-sonnet-5-5"}, params_object="params.t-1.x")
    assert await checks.params(on_fallback) == {**stored, "model": "claude-sonnet-5-5"}
    inline = task(params={"model": "m", "max_tokens": 3})
    assert await checks.params(inline) == inline.params
    with pytest.raises(PayloadMissing):
        await checks.params(task(params_object="params.t-1.gone"))
    bucket.objects["acme", "params.t-1.list"] = b"[1, 2]"
    with pytest.raises(ValueError, match="not a JSON object"):
        await checks.params(task(params_object="params.t-1.list"))


async def test_a_fallback_stores_the_params_again_on_its_model() -> None:
    bucket = Bucket()
    old = b'{"model":"claude-opus-5-5","max_tokens":7,"messages":[{"role":"user","content":"\xc3\xa9"}]}'
    bucket.objects["acme", "params.t-1.old"] = old
    refused = task(params_object="params.t-1.old", fallback_model="claude-sonnet-5-5")
    stored = await claims(bucket).fallback_params(refused, "claude-sonnet-5-5")
    assert stored is not None
    new = bucket.objects["acme", stored.name]
    assert (stored.name, stored.digest) == (params_name("t-1", new), digest_of(new))
    assert json.loads(new) == {**json.loads(old), "model": "claude-sonnet-5-5"}
    assert bucket.objects["acme", "params.t-1.old"] == old  # a replay of the refusal reads it
    # The same bytes again on a replay: the same object, stored once more, nothing new.
    assert await claims(bucket).fallback_params(refused, "claude-sonnet-5-5") == stored
    assert await claims(bucket).fallback_params(task(), "m") is None  # inline params
    with pytest.raises(PayloadMissing):
        await claims(bucket).fallback_params(task(params_object="params.t-1.gone"), "m")


async def test_release_deletes_named_params_only() -> None:
    bucket = Bucket()
    bucket.objects["acme", "params.t-1.x"] = b"{}"
    await claims(bucket).release("acme", None)
    assert bucket.objects
    await claims(bucket).release("acme", "params.t-1.x")
    await claims(bucket).release("acme", "params.t-1.x")  # gone already: fine
    assert not bucket.objects


def test_with_model_changes_the_model_and_nothing_else() -> None:
    params = {"max_tokens": 7, "model": "a", "temperature": 0.1, "big": 12345678901234567890,
              "messages": [{"role": "user", "content": "Ünïcode ✓ \U0001f680"}]}
    rewritten = json.loads(with_model(json.dumps(params).encode(), "b"))
    assert rewritten == {**params, "model": "b"}
    assert list(rewritten) == list(params)  # the model keeps its place


def test_a_fallback_of_stored_params_names_the_new_object() -> None:
    stored = task(params_object="params.t-1.old", fallback_model="claude-sonnet-5-5")
    refused = refused_attempt(1, "msgbatch_1", "claude-opus-5-5",
                              {"category": "cyber", "explanation": None}, None)
    new = Stored("params.t-1.new", 10, "SHA-256=abc")
    nxt = fallback_task(stored, refused, "claude-sonnet-5-5", stored=new)
    assert (nxt.params, nxt.params_object, nxt.params_digest, nxt.attempt) == (
        {"model": "claude-sonnet-5-5"}, "params.t-1.new", "SHA-256=abc", 2)
    # Forgetting to store them again would send the refusing model's params once more.
    with pytest.raises(ValueError, match="new object"):
        fallback_task(stored, refused, "claude-sonnet-5-5")
    with pytest.raises(ValueError, match="new object"):
        fallback_task(task(), refused, "claude-sonnet-5-5", stored=new)


def test_a_retried_task_keeps_its_stored_params() -> None:
    stored = task(params_object="params.t-1.x")
    # What the notifier reads back from the internal stream, and the retry it builds of it.
    read_back = AcceptedTask.model_validate_json(stored.model_dump_json())
    assert read_back.params_object == "params.t-1.x"
    assert read_back.model_copy(update={"attempt": 2}).params_object == "params.t-1.x"

"""The batcher's pure parts: custom ids, request sizes, the flush policy."""

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from batchbus.services.batcher.batching import (
    BODY_CHUNK,
    ENVELOPE_BYTES,
    FlushPolicy,
    PendingBatch,
    batch_body,
    custom_id,
    distinct_count,
    encode_request,
    prefix_key,
)
from batchbus.services.batcher.settings import BatcherSettings

API_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def test_custom_id_is_deterministic_api_safe_and_distinct() -> None:
    a = custom_id("acme", "t" * 64, 1)
    assert a == custom_id("acme", "t" * 64, 1)
    assert API_CUSTOM_ID.match(a)
    assert len({a, custom_id("acme", "t" * 64, 2), custom_id("acme2", "t" * 64, 1),
                custom_id("acm", "et" + "t" * 62, 1)}) == 4


def size(request: dict[str, Any]) -> int:
    """What the collector counts for a request: its encoding and its comma."""
    return len(encode_request(request["custom_id"], request["params"])) + 1


def test_an_encoded_request_is_the_sdk_encoding() -> None:
    request = {"custom_id": "c", "params": {"messages": [{"content": "héllo"}]}}
    body = json.dumps({"requests": [request, request]}, ensure_ascii=False,
                      separators=(",", ":")).encode()
    # Two requests and the envelope: each counts its comma, the last comma is spare.
    assert ENVELOPE_BYTES + 2 * size(request) == len(body) + 1


def policy(**kw: float) -> FlushPolicy:
    return FlushPolicy(**{"max_requests": 3, "max_bytes": 1000, "max_wait": 10.0, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("count", [1, BODY_CHUNK, BODY_CHUNK + 1, 2 * BODY_CHUNK + 7])
def test_the_body_in_pieces_is_the_requests_and_the_size_the_batcher_counted(count: int) -> None:
    requests = [{"custom_id": f"c{i}", "params": {"messages": [{"content": f"héllo {i} 🚚"}]}}
                for i in range(count)]
    length, pieces = batch_body([encode_request(r["custom_id"], r["params"]) for r in requests])
    body = b"".join(asyncio.run(_read(pieces)))
    assert json.loads(body) == {"requests": requests}
    # The collector's running size (a comma each) plus the envelope, less the comma the
    # last request does not have.
    assert len(body) == length == ENVELOPE_BYTES + sum(size(r) for r in requests) - 1


async def _read(pieces: AsyncIterator[bytes]) -> list[bytes]:
    return [piece async for piece in pieces]


def test_a_request_is_encoded_as_the_sdk_would_encode_it() -> None:
    params = {"max_tokens": 1, "stop": ["\n", "\u2028", '"', "\\"], "top_k": 10**30,
              "messages": [{"content": "é\x00\x1f\x7f🚚 </script> NaN, Infinity"}],
              "nested": {"a": [None, True, -1, 0.5, 1e16]}}
    assert encode_request("cid", params) == json.dumps(
        {"custom_id": "cid", "params": params}, ensure_ascii=False, separators=(",", ":")).encode()


def test_a_float_is_encoded_to_its_own_value() -> None:
    # Small exponents are written 1e-7 rather than 1e-07: the same JSON number.
    params = {"temperature": 0.7, "values": [-1e-7, 1e-5, 5e-324, 1.2345678901234567e-300]}
    assert json.loads(encode_request("cid", params)) == {"custom_id": "cid", "params": params}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_request_json_cannot_carry_is_refused(value: float) -> None:
    with pytest.raises(ValueError):
        encode_request("cid", {"messages": [], "temperature": value})


def test_requests_that_can_share_a_prompt_cache_have_one_prefix_key() -> None:
    base = {"model": "m", "system": "s", "messages": [{"content": "a"}]}
    tools = [{"name": "t", "input_schema": {"type": "object", "properties": {}}}]
    assert prefix_key(base) == prefix_key({**base, "messages": [], "max_tokens": 5})
    assert len({prefix_key(base), prefix_key({**base, "system": "t"}),
                prefix_key({**base, "model": "n"}), prefix_key({**base, "tools": tools}),
                prefix_key({**base, "system": [{"type": "text", "text": "s"}]})}) == 5
    # Key order inside the tools does not split a prefix.
    reordered = [{"input_schema": {"properties": {}, "type": "object"}, "name": "t"}]
    assert prefix_key({**base, "tools": tools}) == prefix_key({**base, "tools": reordered})


def test_flushes_at_the_request_count() -> None:
    batch: PendingBatch[str] = PendingBatch(policy())
    for i in range(3):
        assert batch.flush_reason(0.0) is None
        batch.add(f"r{i}", 10, now=0.0)
    assert batch.flush_reason(0.0) == "count"
    assert not batch.fits(1)


def test_flushes_when_the_oldest_task_has_waited_the_window() -> None:
    batch: PendingBatch[str] = PendingBatch(policy())
    batch.add("a", 10, now=100.0)
    batch.add("b", 10, now=105.0)
    assert batch.time_left(108.0) == 2.0
    assert batch.flush_reason(109.9) is None
    assert batch.flush_reason(110.0) == "time"


def test_a_request_that_would_pass_the_byte_limit_does_not_fit() -> None:
    batch: PendingBatch[str] = PendingBatch(policy(max_requests=100))
    batch.add("a", 900, now=0.0)
    assert batch.fits(1000 - 900 - ENVELOPE_BYTES)
    assert not batch.fits(1000 - 900 - ENVELOPE_BYTES + 1)


def test_take_empties_the_batch() -> None:
    batch: PendingBatch[str] = PendingBatch(policy())
    batch.add("a", 10, now=1.0)
    assert batch.take() == ["a"]
    assert batch.items == [] and batch.bytes == ENVELOPE_BYTES and batch.time_left(5.0) is None


def test_a_window_of_100_001_requests_is_split_at_the_api_limit() -> None:
    batch: PendingBatch[int] = PendingBatch(FlushPolicy(100_000, 256_000_000, 60.0))
    sizes = []
    for i in range(100_001):
        if not batch.fits(10):
            sizes.append(len(batch.take()))
        batch.add(i, 10, now=0.0)
        if batch.flush_reason(0.0) == "count":
            sizes.append(len(batch.take()))
    sizes.append(len(batch.take()))
    assert sizes == [100_000, 1]


@pytest.mark.parametrize("env", [{"BATCHER_MAX_REQUESTS": "100001"},
                                 {"BATCHER_MAX_BYTES": str(256 * 1000 * 1000 + 1)},
                                 {"BATCHER_INTENT_STALE_SECONDS": "60"}])
def test_settings_beyond_the_api_limits_are_refused_at_start_up(
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError):
        BatcherSettings()


def test_a_batch_never_shares_its_request_count_with_an_unresolved_intent() -> None:
    # Creates in doubt are told apart by their count: 500 and 499 are taken, so 498.
    assert distinct_count(500, {500, 499, 12}) == 498
    assert distinct_count(500, set()) == 500
    assert distinct_count(2, {1, 2}) == 1  # one request is sent even then

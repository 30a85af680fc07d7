"""The batcher's pure parts: custom ids, request sizes, the flush policy."""

import json
import re

import pytest
from pydantic import ValidationError

from services.batcher.batching import (
    BODY_CHUNK,
    ENVELOPE_BYTES,
    FlushPolicy,
    PendingBatch,
    batch_body,
    custom_id,
    distinct_count,
    request_bytes,
)
from services.batcher.settings import BatcherSettings

API_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def test_custom_id_is_deterministic_api_safe_and_distinct() -> None:
    a = custom_id("acme", "t" * 64, 1)
    assert a == custom_id("acme", "t" * 64, 1)
    assert API_CUSTOM_ID.match(a)
    assert len({a, custom_id("acme", "t" * 64, 2), custom_id("acme2", "t" * 64, 1),
                custom_id("acm", "et" + "t" * 62, 1)}) == 4


def test_request_bytes_match_the_sdk_encoding() -> None:
    request = {"custom_id": "c", "params": {"messages": [{"content": "héllo"}]}}
    body = json.dumps({"requests": [request, request]}, ensure_ascii=False,
                      separators=(",", ":")).encode()
    # Two requests and the envelope: each counts its comma, the last comma is spare.
    assert ENVELOPE_BYTES + 2 * request_bytes(request) == len(body) + 1


def policy(**kw: float) -> FlushPolicy:
    return FlushPolicy(**{"max_requests": 3, "max_bytes": 1000, "max_wait": 10.0, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("count", [1, BODY_CHUNK, BODY_CHUNK + 1, 2 * BODY_CHUNK + 7])
def test_the_body_in_pieces_is_the_requests_and_the_size_the_batcher_counted(count: int) -> None:
    requests = [{"custom_id": f"c{i}", "params": {"messages": [{"content": f"héllo {i} 🚚"}]}}
                for i in range(count)]
    body = b"".join(batch_body(iter(requests)))
    assert json.loads(body) == {"requests": requests}
    # The collector's running size (request_bytes, a comma each) plus the envelope,
    # less the comma the last request does not have.
    assert len(body) == ENVELOPE_BYTES + sum(request_bytes(r) for r in requests) - 1


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

"""Create-time (HTTP 400/413) validation, and deferred `params` validation as errored lines."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types.messages import MessageBatch

from batchbus.emulator import EmulatorHandle
from tests.emulator.helpers import item, params, results_by_id

PATTERN_ERROR = "requests.1.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([], "requests: List should have at least 1 item after validation, not 0"),
        ([{"params": params()}], "requests.0.custom_id: Field required"),
        (
            [item("ok"), {"custom_id": "x" * 65, "params": params()}],
            "requests.1.custom_id: String should have at most 64 characters",
        ),
        ([item("ok"), {"custom_id": "has space", "params": params()}], PATTERN_ERROR),
        ([item("ok"), {"custom_id": "dot.ted", "params": params()}], PATTERN_ERROR),
        (
            [item("dup"), item("other"), item("dup")],
            "requests: custom_id's must be unique within a batch. Duplicate custom_id found: dup",
        ),
        ([{"custom_id": "a"}], "requests.0.params: Field required"),
    ],
)
def test_create_time_errors_are_400(
    client: anthropic.Anthropic, emu: EmulatorHandle, requests: Any, message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=requests)
    assert caught.value.status_code == 400
    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message == message
    assert emu.state.creates() == [], "a rejected create makes no batch"


def test_body_that_is_not_json_is_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.post("/v1/messages/batches", cast_to=MessageBatch, content=b'{"requests": [')
    assert (caught.value.api_message or "").startswith("The request body is not valid JSON: ")


def test_missing_requests_field_is_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="requests: Field required"):
        client.post("/v1/messages/batches", cast_to=MessageBatch, body={})


def test_more_than_max_requests_is_400(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    emu.configure(max_requests=3)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=[item(f"r{n}") for n in range(4)])
    assert caught.value.api_message == (
        "requests: List should have at most 3 items after validation, not 4"
    )


def test_body_over_the_size_limit_is_413_in_cloudflare_shape(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    emu.configure(max_body_bytes=2_000)
    with pytest.raises(anthropic.ContentTooLargeError) as caught:
        client.messages.batches.create(requests=[item("big", system="x" * 5_000)])
    assert caught.value.status_code == 413
    assert caught.value.body == {
        "error": {"type": "request_too_large", "message": "Request exceeds the maximum size"}
    }
    assert emu.state.creates() == []


@pytest.mark.parametrize(
    ("bad_params", "error_type", "message"),
    [
        ({"max_tokens": 10, "messages": []}, "invalid_request_error", "model: Field required"),
        (
            {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}]},
            "invalid_request_error",
            "max_tokens: Field required",
        ),
        (
            {"model": "claude-haiku-4-5", "max_tokens": 5},
            "invalid_request_error",
            "messages: Field required",
        ),
        (
            params(max_tokens=0),
            "invalid_request_error",
            "max_tokens: must be greater than or equal to 1",
        ),
        (
            params(stream=True),
            "invalid_request_error",
            '"stream=True" is not supported in the Message Batches API',
        ),
        (params(model="claude-nope-9"), "not_found_error", "model: claude-nope-9"),
        (
            params(max_tokens=9_999_999),
            "invalid_request_error",
            "max_tokens: 9999999 > 64000, which is the maximum allowed number of output tokens "
            "for claude-haiku-4-5",
        ),
        (
            params(temperature=0.5),
            "invalid_request_error",
            "temperature: Extra inputs are not permitted",
        ),
    ],
)
def test_invalid_params_become_errored_lines(
    client: anthropic.Anthropic,
    emu: EmulatorHandle,
    bad_params: dict[str, Any],
    error_type: str,
    message: str,
) -> None:
    bad: Any = {"custom_id": "bad", "params": bad_params}
    batch = client.messages.batches.create(requests=[bad, item("good")])
    emu.advance(2)
    counts = client.messages.batches.retrieve(batch.id).request_counts
    assert (counts.errored, counts.succeeded) == (1, 1)
    result = results_by_id(client, batch.id)["bad"]
    assert result.type == "errored"
    assert result.error.error.type == error_type
    assert result.error.error.message == message
    assert result.error.request_id is None

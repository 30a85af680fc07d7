"""The synchronous Messages API (`POST /v1/messages`), non-streaming only."""

from __future__ import annotations

import anthropic
import pytest
from anthropic.types import MessageParam

from batchbus.emulator import EmulatorHandle, FaultRule
from tests.emulator.helpers import MODEL, make_client

MESSAGES: list[MessageParam] = [{"role": "user", "content": "hello"}]


def test_message_reply_uses_standard_tier(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    assert message.id.startswith("msg_01") and message.model == MODEL
    assert message.stop_reason == "end_turn" and message.content[0].type == "text"
    assert message.usage.service_tier == "standard"
    again = client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    assert again.usage == message.usage and again.content == message.content
    assert again.id != message.id


def test_streaming_is_rejected(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="stream"):
        client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, stream=True)


def test_unknown_model_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError, match="model: claude-nope"):
        client.messages.create(model="claude-nope", max_tokens=100, messages=MESSAGES)


def test_missing_max_tokens_is_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="max_tokens: Field required"):
        client.post("/v1/messages", cast_to=object, body={"model": MODEL, "messages": MESSAGES})


def test_messages_faults_are_retried(emu: EmulatorHandle) -> None:
    emu.configure(faults=[FaultRule(operation="messages", status=529, retry_after_ms=10)])
    with make_client(emu, max_retries=1) as sdk:
        assert sdk.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES).content
    assert emu.state.stats()["calls"]["messages"] == 2

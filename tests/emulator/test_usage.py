"""Usage figures that pricing depends on: cache writes per TTL, cache reads, inference_geo,
and prompts above 100K tokens (claude-haiku-5-5's second price band)."""

from __future__ import annotations

import anthropic
import pytest

from batchbus.emulator import EmulatorHandle, UsageOverride
from tests.emulator.helpers import item, params, run_batch

HAIKU_5_5 = "claude-haiku-5-5"



def test_override_splits_cache_writes_by_ttl(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    emu.configure(
        usage_override=UsageOverride(
            input_tokens=100,
            output_tokens=10,
            cache_creation_input_tokens=700,
            ephemeral_1h_input_tokens=500,
            cache_read_input_tokens=40,
        )
    )
    usage = run_batch(client, emu, [item("a")])["a"].message.usage
    assert usage.cache_creation is not None
    assert usage.cache_creation_input_tokens == 700 and usage.cache_read_input_tokens == 40
    assert usage.cache_creation.ephemeral_1h_input_tokens == 500
    assert usage.cache_creation.ephemeral_5m_input_tokens == 200


def test_override_rejects_more_1h_writes_than_writes(emu: EmulatorHandle) -> None:
    with pytest.raises(ValueError, match="ephemeral_1h_input_tokens"):
        emu.configure(
            usage_override={"input_tokens": 1, "output_tokens": 1, "ephemeral_1h_input_tokens": 5}
        )


def test_natural_cache_writes_and_reads_per_ttl(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    hour = [{"type": "text", "text": "long " * 300, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    minutes = [{"type": "text", "text": "short " * 300, "cache_control": {"type": "ephemeral"}}]
    lines = run_batch(
        client,
        emu,
        [item("w1h", system=hour), item("w5m", system=minutes), item("r1h", system=hour)],
    )
    written_1h, written_5m = lines["w1h"].message.usage, lines["w5m"].message.usage
    assert written_1h.cache_creation.ephemeral_1h_input_tokens == written_1h.cache_creation_input_tokens > 0
    assert written_1h.cache_creation.ephemeral_5m_input_tokens == 0
    assert written_5m.cache_creation.ephemeral_5m_input_tokens == written_5m.cache_creation_input_tokens > 0
    read = lines["r1h"].message.usage
    assert read.cache_read_input_tokens == written_1h.cache_creation_input_tokens
    assert read.cache_creation_input_tokens == 0


def test_inference_geo_is_echoed(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    lines = run_batch(client, emu, [item("us", inference_geo="us"), item("none")])
    assert lines["us"].message.usage.inference_geo == "us"
    assert lines["none"].message.usage.inference_geo == "not_available"
    message = client.messages.create(**params(inference_geo="us"))
    assert message.usage.inference_geo == "us"


def test_input_tokens_directive_sets_the_prompt_size(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    """A prompt above 100K tokens without sending 400 KB; caching still splits it."""
    cached = [{"type": "text", "text": "doc " * 200, "cache_control": {"type": "ephemeral"}}]
    big = "emulate:succeeded:input_tokens=150000"
    lines = run_batch(
        client,
        emu,
        [
            item("big", model=HAIKU_5_5, metadata={"user_id": big}),
            item("big-cached", model=HAIKU_5_5, system=cached, metadata={"user_id": big}),
            item("small", model=HAIKU_5_5),
        ],
    )
    assert lines["big"].message.usage.input_tokens == 150_000
    usage = lines["big-cached"].message.usage
    assert usage.cache_creation_input_tokens > 0
    assert usage.input_tokens + usage.cache_creation_input_tokens == 150_000
    assert lines["small"].message.usage.input_tokens < 100
    refused = "emulate:refusal:cyber:input_tokens=120000"
    message = client.messages.create(**params(model=HAIKU_5_5, metadata={"user_id": refused}))
    assert message.stop_reason == "refusal" and message.usage.input_tokens == 120_000


def test_a_real_big_prompt_is_counted_too(client: anthropic.Anthropic) -> None:
    """About four characters per token: 440,000 characters pass 100K tokens."""
    message = client.messages.create(**params("x" * 440_000, model=HAIKU_5_5))
    assert message.usage.input_tokens > 100_000

"""Refusals: a succeeded message with stop_reason "refusal" and stop_details, billed, from a
directive (`emulate:refusal[:<category>]`) or an outcome rule, in batches and on messages."""

from __future__ import annotations

import anthropic
import pytest
from anthropic.types.messages.batch_create_params import Request

from batchbus.emulator import EmulatorHandle, OutcomeRule
from tests.emulator.helpers import item, params, run_batch

MODEL = "claude-opus-5-5"



def refused(custom_id: str, directive: str) -> Request:
    return item(custom_id, model=MODEL, metadata={"user_id": directive})


def test_refusal_directive_gives_a_billed_refusal(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    lines = run_batch(
        client,
        emu,
        [refused("cyber", "emulate:refusal:cyber"), refused("plain", "emulate:refusal")],
    )
    counts = client.messages.batches.list().data[0].request_counts
    assert counts.succeeded == 2, "a refusal is a succeeded line"
    message = lines["cyber"].message
    assert message.stop_reason == "refusal" and message.content == []
    assert message.stop_details is not None
    assert (message.stop_details.type, message.stop_details.category) == ("refusal", "cyber")
    assert message.stop_details.explanation
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.service_tier == "batch"
    plain = lines["plain"].message
    assert plain.stop_details is not None and plain.stop_details.category is None


def test_refusal_rule_and_first_n(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    emu.configure(outcome_rules=[OutcomeRule(custom_id_regex="^risky", outcome="refusal:bio")])
    lines = run_batch(
        client,
        emu,
        [
            item("risky-1", model=MODEL),
            item("safe", model=MODEL),
            refused("once", "emulate:refusal:general_harms:first=1"),
        ],
    )
    assert lines["risky-1"].message.stop_details.category == "bio"
    assert lines["safe"].message.stop_reason == "end_turn"
    assert lines["safe"].message.stop_details is None
    assert lines["once"].message.stop_reason == "refusal"
    again = run_batch(client, emu, [refused("once", "emulate:refusal:general_harms:first=1")])
    assert again["once"].message.stop_reason == "end_turn"


def test_unknown_refusal_category_is_a_malformed_directive(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    result = run_batch(client, emu, [refused("bad", "emulate:refusal:rude")])["bad"]
    assert result.type == "errored"
    assert result.error.error.message == "metadata.user_id: unknown outcome 'refusal:rude'"


def test_invalid_params_win_over_a_refusal(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    bad = item("bad", model=MODEL, temperature=0.5, metadata={"user_id": "emulate:refusal"})
    assert run_batch(client, emu, [bad])["bad"].type == "errored"


def test_refusal_on_messages(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    body = params(model=MODEL, metadata={"user_id": "emulate:refusal:frontier_llm:first=1"})
    message = client.messages.create(**body)
    assert message.stop_reason == "refusal" and message.content == []
    assert message.stop_details is not None and message.stop_details.category == "frontier_llm"
    assert message.usage.service_tier == "standard" and message.usage.input_tokens > 0
    assert client.messages.create(**body).stop_reason == "end_turn", "first=1 is spent"
    assert len(emu.state.messages()) == 2


@pytest.mark.parametrize(
    "directive", ["emulate:errored:overloaded_error", "emulate:canceled", "emulate:nonsense"]
)
def test_other_directives_do_not_touch_messages(
    client: anthropic.Anthropic, directive: str
) -> None:
    message = client.messages.create(**params(metadata={"user_id": directive}))
    assert message.stop_reason == "end_turn"

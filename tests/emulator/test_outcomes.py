"""Deterministic replies and usage, usage_override, prompt caching, outcome directives, rules."""

from __future__ import annotations

import anthropic
import pytest
from anthropic.types.messages.batch_create_params import Request

from batchbus.emulator import EmulatorHandle, OutcomeRule, UsageOverride
from tests.emulator.helpers import MODEL, item, params, run_batch


def directive(text: str, custom_id: str = "d") -> Request:
    return {"custom_id": custom_id, "params": params("same", metadata={"user_id": text})}


def test_succeeded_message_is_complete(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    message = run_batch(client, emu, [item("a")])["a"].message
    assert message.id.startswith("msg_01") and len(message.id) == 28
    assert (message.type, message.role, message.model) == ("message", "assistant", MODEL)
    assert message.content[0].type == "text" and message.content[0].text
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    usage = message.usage
    assert usage.input_tokens > 0 and 20 <= usage.output_tokens < 60
    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert (usage.service_tier, usage.inference_geo) == ("batch", "not_available")


def test_same_params_give_same_reply_and_usage_across_batches(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    first = run_batch(client, emu, [item("a"), item("b")])
    second = run_batch(client, emu, [{"custom_id": "z", "params": item("a")["params"]}])
    assert second["z"].message.usage == first["a"].message.usage
    assert second["z"].message.content == first["a"].message.content
    assert first["a"].message.content != first["b"].message.content


def test_output_is_capped_by_max_tokens(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    message = run_batch(client, emu, [item("a", max_tokens=3)])["a"].message
    assert message.usage.output_tokens == 3 and message.stop_reason == "max_tokens"


def test_usage_override_fixes_usage(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    emu.configure(
        usage_override=UsageOverride(
            input_tokens=1000,
            output_tokens=50,
            cache_creation_input_tokens=7,
            cache_read_input_tokens=9,
        )
    )
    lines = run_batch(client, emu, [item("a"), item("b", max_tokens=20)])
    usage = lines["a"].message.usage
    assert (usage.input_tokens, usage.output_tokens) == (1000, 50)
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (7, 9)
    assert lines["b"].message.usage.output_tokens == 20
    assert lines["b"].message.stop_reason == "max_tokens"


def test_cache_control_writes_once_then_reads(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    system = [{"type": "text", "text": "shared " * 200, "cache_control": {"type": "ephemeral"}}]
    first = run_batch(client, emu, [item("w", system=system), item("r", system=system)])
    written = first["w"].message.usage
    read = first["r"].message.usage
    assert written.cache_creation_input_tokens > 0 and written.cache_read_input_tokens == 0
    assert written.cache_creation.ephemeral_5m_input_tokens == written.cache_creation_input_tokens
    assert read.cache_read_input_tokens == written.cache_creation_input_tokens
    assert read.cache_creation_input_tokens == 0
    later = run_batch(client, emu, [item("later", system=system)])["later"].message.usage
    assert later.cache_read_input_tokens == written.cache_creation_input_tokens


def test_one_hour_cache_ttl_is_reported(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    mark = {"type": "ephemeral", "ttl": "1h"}
    usage = run_batch(client, emu, [item("a", cache_control=mark)])["a"].message.usage
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_1h_input_tokens == usage.cache_creation_input_tokens > 0


@pytest.mark.parametrize(
    ("error_type", "worker"),
    [("overloaded_error", True), ("api_error", True), ("invalid_request_error", False)],
)
def test_errored_directive(
    client: anthropic.Anthropic, emu: EmulatorHandle, error_type: str, worker: bool
) -> None:
    result = run_batch(client, emu, [directive(f"emulate:errored:{error_type}")])["d"]
    assert result.type == "errored"
    assert result.error.type == "error" and result.error.error.type == error_type
    assert result.error.error.details == {"error_visibility": "user_facing"}
    request_id = result.error.request_id
    assert request_id.startswith("workerreq_") if worker else request_id is None


@pytest.mark.parametrize("kind", ["canceled", "expired", "succeeded"])
def test_simple_directives(client: anthropic.Anthropic, emu: EmulatorHandle, kind: str) -> None:
    result = run_batch(client, emu, [directive(f"emulate:{kind}")])["d"]
    assert result.type == kind
    if kind != "succeeded":
        assert result.model_dump() == {"type": kind}


def test_first_n_fails_only_the_first_submissions(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    text = "emulate:errored:overloaded_error:first=2"
    kinds = [run_batch(client, emu, [directive(text, f"n{n}")])[f"n{n}"].type for n in range(4)]
    assert kinds == ["errored", "errored", "succeeded", "succeeded"]


def test_malformed_directive_is_an_invalid_request(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    result = run_batch(client, emu, [directive("emulate:exploded")])["d"]
    assert result.type == "errored" and result.error.error.type == "invalid_request_error"


def test_outcome_rules_match_custom_ids(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    emu.configure(
        outcome_rules=[
            OutcomeRule(custom_id_regex="^flaky-", outcome="errored:api_error", first=1),
            OutcomeRule(custom_id_regex="late$", outcome="expired"),
        ]
    )
    first = run_batch(client, emu, [item("flaky-1"), item("too-late"), item("fine")])
    assert {cid: r.type for cid, r in first.items()} == {
        "flaky-1": "errored",
        "too-late": "expired",
        "fine": "succeeded",
    }
    retry: Request = {"custom_id": "flaky-1-retry", "params": item("flaky-1")["params"]}
    assert run_batch(client, emu, [retry])["flaky-1-retry"].type == "succeeded"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("emulate:succeeded:colour=3", "metadata.user_id: unknown or repeated option 'colour'"),
        ("emulate:succeeded:first=1:first=2", "metadata.user_id: unknown or repeated option 'first'"),
        (
            "emulate:succeeded:input_tokens=many",
            "metadata.user_id: input_tokens= needs a non-negative integer, got 'many'",
        ),
        (
            "emulate:succeeded:output_tokens=-5",
            "metadata.user_id: output_tokens= needs a non-negative integer, got '-5'",
        ),
    ],
)
def test_malformed_directive_options(
    client: anthropic.Anthropic, emu: EmulatorHandle, text: str, message: str
) -> None:
    result = run_batch(client, emu, [directive(text)])["d"]
    assert result.type == "errored" and result.error.error.message == message


def test_directive_options_combine_in_any_order(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    text = "emulate:errored:api_error:output_tokens=40:input_tokens=5000:first=1"
    first = run_batch(client, emu, [directive(text, "a")])["a"]
    second = run_batch(client, emu, [directive(text, "b")])["b"]
    assert first.type == "errored" and second.message.usage.input_tokens == 5000
    assert second.message.usage.output_tokens == 40 and len(second.message.content[0].text) == 160

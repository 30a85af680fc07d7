"""What the model table does to requests: lifecycle, the Claude 5 rules, and betas per batch
(the output-300k beta, unknown names), on the batch path and on `POST /v1/messages`."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types import Message
from anthropic.types.beta.messages import BetaMessageBatch

from batchbus.emulator import EmulatorHandle
from tests.emulator.helpers import admin, item, make_client, params, results_by_id, run_batch

OUTPUT_300K = "output-300k-2026-03-24"
PREFILL = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "{"}]



def beta_batch(client: anthropic.Anthropic, requests: list[Any], betas: list[str]) -> BetaMessageBatch:
    """`client.beta.messages.batches.create`: the betas go in one `anthropic-beta` header."""
    return client.beta.messages.batches.create(requests=requests, betas=betas)


def error_of(result: Any) -> tuple[str, str]:
    assert result.type == "errored", result
    assert result.error.request_id is None, "a request error, not an execution failure"
    return result.error.error.type, result.error.error.message


def test_retired_model_gives_not_found_lines(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    lines = run_batch(
        client,
        emu,
        [
            item("retired", model="claude-sonnet-4-5"),
            item("alias", model="claude-sonnet-4-5-20250929"),
            item("deprecated", model="claude-opus-4-5"),
            item("active", model="claude-sonnet-5-5"),
        ],
    )
    assert error_of(lines["retired"]) == (
        "not_found_error",
        "model: claude-sonnet-4-5 was retired and no longer serves requests",
    )
    assert error_of(lines["alias"])[1].startswith("model: claude-sonnet-4-5-20250929 was retired")
    assert lines["deprecated"].type == "succeeded" and lines["active"].type == "succeeded"


def test_retiring_a_model_at_runtime_affects_later_batches(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    before = client.messages.batches.create(requests=[item("a", model="claude-opus-4-5")])
    admin(emu, "PUT", "/_emulator/models/claude-opus-4-5", {"lifecycle": "retired"})
    after = client.messages.batches.create(requests=[item("a", model="claude-opus-4-5")])
    emu.advance(2)
    assert results_by_id(client, before.id)["a"].type == "succeeded", "planned at create"
    assert error_of(results_by_id(client, after.id)["a"]) == (
        "not_found_error",
        "model: claude-opus-4-5 was retired and no longer serves requests",
    )


def test_retired_model_is_404_on_messages(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError, match="model: claude-sonnet-4-5 was retired"):
        client.messages.create(**params(model="claude-sonnet-4-5"))


def test_alias_runs_on_messages(client: anthropic.Anthropic) -> None:
    message = client.messages.create(**params(model="claude-haiku-4-5-20251001"))
    assert message.model == "claude-haiku-4-5-20251001"


CLAUDE5_VIOLATIONS = [
    ({"temperature": 0.3}, "`temperature` is deprecated for claude-opus-5-5."),
    ({"top_p": 0.9}, "`top_p` is deprecated for claude-opus-5-5."),
    ({"top_k": 5}, "`top_k` is deprecated for claude-opus-5-5."),
    (
        {"messages": PREFILL},
        "Prefilling assistant messages is not supported for claude-opus-5-5.",
    ),
    (
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        "thinking.type: `enabled` is not supported for claude-opus-5-5; use `adaptive`.",
    ),
]


@pytest.fixture
def client_2023(emu: EmulatorHandle) -> Any:
    """A client on API version 2023-06-01, where sampling parameters still exist."""
    with make_client(emu, default_headers={"anthropic-version": "2023-06-01"}) as sdk:
        yield sdk


@pytest.mark.parametrize(("extra", "message"), CLAUDE5_VIOLATIONS)
def test_claude5_rules_make_errored_lines(
    client_2023: anthropic.Anthropic, emu: EmulatorHandle, extra: dict[str, Any], message: str
) -> None:
    lines = run_batch(
        client_2023,
        emu,
        [item("claude5", model="claude-opus-5-5", **extra), item("older", **extra)],
    )
    assert error_of(lines["claude5"]) == ("invalid_request_error", message)
    assert lines["older"].type == "succeeded", "claude-haiku-4-5 keeps the old rules"


@pytest.mark.parametrize(("extra", "message"), CLAUDE5_VIOLATIONS)
def test_claude5_rules_are_400_on_messages(
    client_2023: anthropic.Anthropic, extra: dict[str, Any], message: str
) -> None:
    body = dict(params(model="claude-opus-5-5", **extra))  # the 2.x SDK types lack top_k etc.
    with pytest.raises(anthropic.BadRequestError) as caught:
        client_2023.post("/v1/messages", cast_to=Message, body=body)
    assert caught.value.api_message == message


def test_claude5_accepts_adaptive_thinking(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    lines = run_batch(
        client,
        emu,
        [
            item("adaptive", model="claude-haiku-5-5", thinking={"type": "adaptive"}),
            item("off", model="claude-haiku-5-5", thinking={"type": "disabled"}),
        ],
    )
    assert {result.type for result in lines.values()} == {"succeeded"}


def test_sampling_under_2026_10_21_keeps_its_own_message(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    lines = run_batch(client, emu, [item("a", model="claude-opus-5-5", temperature=0.3)])
    assert error_of(lines["a"]) == (
        "invalid_request_error",
        "temperature: Extra inputs are not permitted",
    )


def test_unknown_beta_is_400_at_create(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        beta_batch(client, [item("a")], ["files-api-2025-04-14", " no-such-beta ", "other-x"])
    assert caught.value.api_message == (
        "Unexpected value(s) `no-such-beta`, `other-x` for the `anthropic-beta` header. "
        "Please consult our documentation at docs.claude.com or try again without the header."
    )
    assert emu.state.creates() == []


def test_creates_log_keeps_each_batch_betas(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    plain = client.messages.batches.create(requests=[item("a")])
    beta = beta_batch(client, [item("b")], [OUTPUT_300K, "files-api-2025-04-14"])
    creates = admin(emu, "GET", "/_emulator/creates")["creates"]
    assert [(c["batch_id"], c["betas"]) for c in creates] == [
        (plain.id, []),
        (beta.id, [OUTPUT_300K, "files-api-2025-04-14"]),
    ]


def test_output_300k_beta_raises_the_limit_on_its_models(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    big = 250_000
    requests: list[Any] = [
        item("opus", model="claude-opus-5-5", max_tokens=big),
        item("sonnet", model="claude-sonnet-5-5", max_tokens=300_000),
        item("over", model="claude-opus-5-5", max_tokens=300_001),
        item("haiku", model="claude-haiku-5-5", max_tokens=big),
    ]
    with_beta = beta_batch(client, requests, [OUTPUT_300K])
    without = client.messages.batches.create(requests=requests[:1])
    emu.advance(2)
    lines = results_by_id(client, with_beta.id)
    assert lines["opus"].type == "succeeded" and lines["sonnet"].type == "succeeded"
    assert error_of(lines["over"])[1] == (
        "max_tokens: 300001 > 300000, which is the maximum allowed number of output tokens "
        "for claude-opus-5-5"
    )
    assert error_of(lines["haiku"])[1].startswith("max_tokens: 250000 > 128000")
    assert error_of(results_by_id(client, without.id)["opus"])[1].startswith(
        "max_tokens: 250000 > 128000"
    )


def test_output_300k_beta_is_batch_only(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    body: dict[str, Any] = dict(params(model="claude-opus-5-5", max_tokens=1000))
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.messages.create(**body, betas=[OUTPUT_300K])
    assert caught.value.api_message == (
        f"anthropic-beta: {OUTPUT_300K} is supported only by the Message Batches API"
    )
    assert emu.state.messages() == []


def test_known_betas_are_configurable(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    emu.configure(betas={"new-beta-2027-01-01"})
    batch = beta_batch(client, [item("a")], ["new-beta-2027-01-01"])
    assert emu.state.creates()[0]["betas"] == ["new-beta-2027-01-01"]
    with pytest.raises(anthropic.BadRequestError, match="Unexpected value"):
        beta_batch(client, [item("a")], [OUTPUT_300K])
    assert batch.processing_status == "in_progress"

"""Deterministic replies: the Message and usage for params, and the four JSONL result lines.

Text and usage are pure functions of the params (plus config), so costs are checkable.
"""

from __future__ import annotations

from typing import Any, Literal

from batchbus.emulator.config import UsageOverride
from batchbus.emulator.errors import error_envelope
from batchbus.emulator.outcomes import Plan
from batchbus.emulator.prompt import input_token_estimate

ServiceTier = Literal["standard", "batch"]

_LABELS = (
    "Acknowledged.",
    "Here is a concise answer.",
    "Summary: the text makes one main point.",
    "The request was processed as asked.",
    "Done; nothing further to add.",
)

# The text of a long answer (an `output_tokens=` directive): four characters a token.
CHARS_PER_TOKEN = 4
_FILLER = " lorem ipsum dolor sit amet, consectetur adipiscing elit."
# What a reply reads from its params: a batch keeps these, not the prompt (documents of 20 MB).
_REPLY_FIELDS = ("model", "max_tokens", "inference_geo")

# stop_details.explanation per category (the API's wording is not stable; ours is made up).
_REFUSALS: dict[str, str] = {
    "cyber": "The request could enable cyber harm.",
    "bio": "The request could enable biological harm.",
    "frontier_llm": "The request could assist the development of competing AI models.",
    "reasoning_extraction": "The request asks for the model's internal reasoning.",
    "general_harms": "The request relates to an area determined as harmful.",
}


def natural_output_tokens(params_hash: str) -> int:
    """What the "model" would write before hitting max_tokens: 20–59 tokens."""
    return 20 + int(params_hash[:8], 16) % 40


def reply_params(params: dict[str, Any]) -> dict[str, Any]:
    """The params a reply is made from, once the prompt's size is in the plan."""
    return {field: params[field] for field in _REPLY_FIELDS if field in params}


def usage_for(
    params: dict[str, Any],
    params_hash: str,
    plan: Plan,
    override: UsageOverride | None,
    tier: ServiceTier,
) -> tuple[dict[str, Any], bool]:
    """`usage` of a succeeded message and whether max_tokens capped the output.

    Total prompt tokens = input + cache writes + cache reads, as the API counts them.
    """
    if override is not None:
        fresh, natural = override.input_tokens, override.output_tokens
        read = override.cache_read_input_tokens
        hour = override.ephemeral_1h_input_tokens
        minutes = override.cache_creation_input_tokens - hour
    else:
        cache = plan.cache
        # Plans made by the emulator carry the count: a stored batch has no prompts to count.
        total = plan.input_tokens if plan.input_tokens is not None else input_token_estimate(params)
        cached = min(cache.tokens, total) if cache is not None else 0
        fresh, natural = total - cached, natural_output_tokens(params_hash)
        if plan.output_tokens is not None:
            natural = plan.output_tokens
        written = cached if cache is not None and cache.write else 0
        read = cached - written
        hour = written if cache is not None and cache.ttl == "1h" else 0
        minutes = written - hour
    max_tokens = int(params["max_tokens"])
    geo = params.get("inference_geo")
    usage = {
        "input_tokens": fresh,
        "output_tokens": min(natural, max_tokens),
        "cache_creation_input_tokens": minutes + hour,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": minutes, "ephemeral_1h_input_tokens": hour},
        "service_tier": tier,
        # The request's geography is echoed; without one the API reports "not_available".
        "inference_geo": geo if isinstance(geo, str) else "not_available",
    }
    return usage, natural > max_tokens


def reply_message(
    params: dict[str, Any],
    params_hash: str,
    message_id: str,
    plan: Plan,
    override: UsageOverride | None,
    tier: ServiceTier,
) -> dict[str, Any]:
    """A full Messages API response; stop_reason is max_tokens when the output was capped,
    refusal (with stop_details, no content, usage still billed) when the plan says so."""
    usage, capped = usage_for(params, params_hash, plan, override, tier)
    seed = int(params_hash[:8], 16)
    text = f"{_LABELS[seed % len(_LABELS)]} [emulated {params_hash[:8]}]"
    if plan.output_tokens is not None:
        text = long_text(text, usage["output_tokens"])
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": [{"type": "text", "text": text, "citations": None}],
        "stop_reason": "max_tokens" if capped else "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    if plan.refusal is not None:
        category = plan.refusal.category
        explanation = _REFUSALS.get(category or "", "The request was declined.")
        message["content"] = []
        message["stop_reason"] = "refusal"
        message["stop_details"] = {
            "type": "refusal",
            "category": category,
            "explanation": explanation,
        }
    return message


def long_text(head: str, tokens: int) -> str:
    """Exactly CHARS_PER_TOKEN * `tokens` characters: `head`, then filler (built by string
    repetition: 1.2 MB for 300K tokens in a few milliseconds)."""
    size = CHARS_PER_TOKEN * tokens
    repeats = size // len(_FILLER) + 1
    return (head + _FILLER * repeats)[:size]


def succeeded_line(custom_id: str, message: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}


def errored_line(custom_id: str, plan: Plan, request_id: str | None) -> dict[str, Any]:
    details = {"error_visibility": "user_facing"}
    error = error_envelope(plan.error_type or "api_error", plan.message or "", request_id, details)
    return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}


def bare_line(custom_id: str, kind: Literal["canceled", "expired"]) -> dict[str, Any]:
    return {"custom_id": custom_id, "result": {"type": kind}}

"""Outcome strings (`succeeded`, `errored:<type>`, `refusal[:<category>]`, …) and `emulate:`
directives in metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ResultKind = Literal["succeeded", "errored", "canceled", "expired"]

DIRECTIVE_PREFIX = "emulate:"
_SIMPLE: dict[str, ResultKind] = {
    "succeeded": "succeeded",
    "canceled": "canceled",
    "expired": "expired",
}
# RefusalStopDetails.category in the SDK (None: a refusal without a named category).
REFUSAL_CATEGORIES = frozenset({"cyber", "bio", "frontier_llm", "reasoning_extraction", "general_harms"})
_OPTIONS = frozenset({"first", "input_tokens", "output_tokens"})


@dataclass(frozen=True, slots=True)
class Refusal:
    category: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: ResultKind
    error_type: str | None = None
    refusal: Refusal | None = None  # a succeeded message with stop_reason "refusal"


@dataclass(frozen=True, slots=True)
class Directive:
    outcome: Outcome
    first: int | None = None
    input_tokens: int | None = None  # the prompt's size, instead of the estimate
    # The answer's length: text of about 4 characters a token, usage to match (capped at
    # max_tokens), so a 300K-token answer (over 1 MB of JSON) needs no 300K-token prompt.
    output_tokens: int | None = None


def parse_outcome(text: str) -> Outcome:
    """`succeeded` | `canceled` | `expired` | `errored:<error_type>` | `refusal[:<category>]`;
    ValueError otherwise."""
    if text in _SIMPLE:
        return Outcome(_SIMPLE[text])
    kind, _, detail = text.partition(":")
    if kind == "errored" and detail and ":" not in detail:
        return Outcome("errored", detail)
    if kind == "refusal" and (not detail or detail in REFUSAL_CATEGORIES):
        return Outcome("succeeded", refusal=Refusal(detail or None))
    raise ValueError(f"unknown outcome {text!r}")


def parse_directive(text: str) -> Directive:
    """`emulate:<outcome>[:first=<n>][:input_tokens=<n>][:output_tokens=<n>]` (options in
    any order; prefix already checked); ValueError if malformed."""
    parts = text.removeprefix(DIRECTIVE_PREFIX).split(":")
    options: dict[str, int] = {}
    while parts and "=" in parts[-1]:
        name, _, value = parts.pop().partition("=")
        if name not in _OPTIONS or name in options:
            raise ValueError(f"unknown or repeated option {name!r}")
        if not value.isdigit():
            raise ValueError(f"{name}= needs a non-negative integer, got {value!r}")
        options[name] = int(value)
    return Directive(
        parse_outcome(":".join(parts)),
        options.get("first"),
        options.get("input_tokens"),
        options.get("output_tokens"),
    )


def directive_text(params: dict[str, Any]) -> str | None:
    """The `emulate:` string in `params.metadata.user_id`, if any."""
    metadata = params.get("metadata")
    if not isinstance(metadata, dict):
        return None
    user_id = metadata.get("user_id")
    if isinstance(user_id, str) and user_id.startswith(DIRECTIVE_PREFIX):
        return user_id
    return None

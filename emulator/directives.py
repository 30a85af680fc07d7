"""Outcome strings (`succeeded`, `errored:<type>`, …) and `emulate:` directives in metadata."""

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


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: ResultKind
    error_type: str | None = None


@dataclass(frozen=True, slots=True)
class Directive:
    outcome: Outcome
    first: int | None = None


def parse_outcome(text: str) -> Outcome:
    """`succeeded` | `canceled` | `expired` | `errored:<error_type>`; ValueError otherwise."""
    if text in _SIMPLE:
        return Outcome(_SIMPLE[text])
    kind, _, error_type = text.partition(":")
    if kind == "errored" and error_type and ":" not in error_type:
        return Outcome("errored", error_type)
    raise ValueError(f"unknown outcome {text!r}")


def parse_directive(text: str) -> Directive:
    """`emulate:<outcome>[:first=<n>]` (prefix already checked); ValueError if malformed."""
    body = text.removeprefix(DIRECTIVE_PREFIX)
    head, sep, tail = body.rpartition(":first=")
    if not sep:
        return Directive(parse_outcome(body))
    if not tail.isdigit():
        raise ValueError(f"first= needs a non-negative integer, got {tail!r}")
    return Directive(parse_outcome(head), int(tail))


def directive_text(params: dict[str, Any]) -> str | None:
    """The `emulate:` string in `params.metadata.user_id`, if any."""
    metadata = params.get("metadata")
    if not isinstance(metadata, dict):
        return None
    user_id = metadata.get("user_id")
    if isinstance(user_id, str) and user_id.startswith(DIRECTIVE_PREFIX):
        return user_id
    return None

"""Pure functions of request params: canonical JSON, params hash, token estimates, cache prefix."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic_core import to_json

CacheTtl = Literal["5m", "1h"]
_CACHE_MARK = '"cache_control":'


def canonical_json(value: Any) -> str:
    """Compact JSON with every object's keys sorted (pydantic's encoder over a sorted copy:
    twice as fast as json.dumps with sort_keys)."""
    return to_json(_sorted(value)).decode()


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def params_hash(params: dict[str, Any]) -> str:
    """Identity of a request's params, independent of key order."""
    return sha256_hex(canonical_json(params))


def _prompt_tokens(prompt: dict[str, Any]) -> int:
    # Length does not depend on key order, so the (faster) unsorted encoding is enough.
    return max(1, math.ceil(len(to_json(prompt).decode()) / 4))


def prompt_parts(params: dict[str, Any], message_count: int | None = None) -> dict[str, Any]:
    messages = params.get("messages")
    if isinstance(messages, list) and message_count is not None:
        messages = messages[:message_count]
    return {"system": params.get("system"), "messages": messages, "tools": params.get("tools")}


def input_token_estimate(params: dict[str, Any]) -> int:
    """About four characters per token over system + messages + tools."""
    return _prompt_tokens(prompt_parts(params))


@dataclass(frozen=True, slots=True)
class CachePrefix:
    key: str
    tokens: int
    ttl: CacheTtl


def cache_prefix(params: dict[str, Any], canonical: str | None = None) -> CachePrefix | None:
    """The cacheable prefix marked by `cache_control`, or None when nothing is marked.

    Top-level `cache_control` caches the whole prompt; otherwise the prefix runs through the
    last message holding a marked block, or covers tools + system when only they are marked.
    The key includes the model, because caches are per model.
    """
    marks = _marks(params, canonical if canonical is not None else canonical_json(params))
    if not marks:
        return None
    messages = params.get("messages")
    count = len(messages) if isinstance(messages, list) else 0
    if "cache_control" not in params:
        count = _last_marked_message(messages) + 1
    prompt = prompt_parts(params, count)
    key = sha256_hex(canonical_json({"model": params.get("model"), "prompt": prompt}))
    ttl: CacheTtl = "1h" if any(mark.get("ttl") == "1h" for mark in marks) else "5m"
    return CachePrefix(key, _prompt_tokens(prompt), ttl)


def _marks(params: dict[str, Any], canonical: str) -> list[dict[str, Any]]:
    # Cheap substring test first: walking every request's params would slow big creates.
    if _CACHE_MARK not in canonical:
        return []
    found: list[dict[str, Any]] = []
    _collect_marks(params, found)
    return found


def _collect_marks(value: Any, found: list[dict[str, Any]]) -> None:
    if isinstance(value, dict):
        mark = value.get("cache_control")
        if isinstance(mark, dict):
            found.append(mark)
        for child in value.values():
            _collect_marks(child, found)
    elif isinstance(value, list):
        for child in value:
            _collect_marks(child, found)


def _last_marked_message(messages: Any) -> int:
    if not isinstance(messages, list):
        return -1
    last = -1
    for index, message in enumerate(messages):
        marks: list[dict[str, Any]] = []
        _collect_marks(message, marks)
        if marks:
            last = index
    return last

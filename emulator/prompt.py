"""Pure functions of request params: canonical JSON, params hash, token estimates, cache prefix."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic_core import to_json

CacheTtl = Literal["5m", "1h"]
_CACHE_MARK = b'"cache_control":'
_BASE64_MARK = b'"base64"'
# A base64 source (a PDF, an image) counts by its decoded size, never by its characters:
# 20 MB of base64 is not 5M tokens. About 64 bytes of PDF a token puts a 100-page, 15 MB PDF
# near 250K tokens (2,500 a page), the size of real answers; nothing is decoded to count it.
DOCUMENT_BYTES_PER_TOKEN = 64
# The API scales an image down to about 1.15 megapixels, so no image costs more than this.
IMAGE_MAX_TOKENS = 1_600


def canonical_json(value: Any) -> bytes:
    """Compact UTF-8 JSON with every object's keys sorted (pydantic's encoder over a sorted
    copy: twice as fast as json.dumps with sort_keys). Bytes, hashed as they are: a 20 MB
    document is not copied to str and back."""
    return to_json(_sorted(value))


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def params_hash(params: dict[str, Any]) -> str:
    """Identity of a request's params, independent of key order."""
    return sha256_hex(canonical_json(params))


def _prompt_tokens(prompt: dict[str, Any], binary: bool = True) -> int:
    """About four characters a token, base64 sources by their size. `binary=False` (the
    params' JSON has no base64 source) skips the walk that looks for them."""
    tokens = 0
    if binary:
        prompt, tokens = _without_binary(prompt)
    # Length does not depend on key order, so the (faster) unsorted encoding is enough.
    return max(1, math.ceil(len(to_json(prompt).decode()) / 4) + tokens)


def _without_binary(value: Any) -> tuple[Any, int]:
    """`value` with the data of its base64 sources left out, and the tokens that data counts
    (a walk over the blocks, not over the bytes)."""
    if isinstance(value, dict):
        if value.get("type") == "base64" and isinstance(value.get("data"), str):
            return {**value, "data": ""}, binary_tokens(value["data"], value.get("media_type"))
        pairs = [(key, _without_binary(child)) for key, child in value.items()]
        return {key: light for key, (light, _) in pairs}, sum(n for _, (_, n) in pairs)
    if isinstance(value, list):
        items = [_without_binary(child) for child in value]
        return [light for light, _ in items], sum(n for _, n in items)
    return value, 0


def binary_tokens(data: str, media_type: Any) -> int:
    """Tokens of a base64 source from its length alone: documents in proportion to their
    bytes, images the same but capped at IMAGE_MAX_TOKENS."""
    size = len(data) * 3 // 4  # decoded bytes, give or take the padding
    tokens = max(1, math.ceil(size / DOCUMENT_BYTES_PER_TOKEN))
    if isinstance(media_type, str) and media_type.startswith("image/"):
        return min(tokens, IMAGE_MAX_TOKENS)
    return tokens


def prompt_parts(params: dict[str, Any], message_count: int | None = None) -> dict[str, Any]:
    messages = params.get("messages")
    if isinstance(messages, list) and message_count is not None:
        messages = messages[:message_count]
    return {"system": params.get("system"), "messages": messages, "tools": params.get("tools")}


def input_token_estimate(params: dict[str, Any], canonical: bytes | None = None) -> int:
    """About four characters per token over system + messages + tools; a base64 document or
    image by its size. `canonical` (the params' canonical JSON, when at hand) tells in one C
    scan whether there is any base64 source to look for."""
    return _prompt_tokens(prompt_parts(params), _may_hold_binary(canonical))


def _may_hold_binary(canonical: bytes | None) -> bool:
    return canonical is None or _BASE64_MARK in canonical


@dataclass(frozen=True, slots=True)
class CachePrefix:
    key: str
    tokens: int
    ttl: CacheTtl


def cache_prefix(params: dict[str, Any], canonical: bytes | None = None) -> CachePrefix | None:
    """The cacheable prefix marked by `cache_control`, or None when nothing is marked.

    Top-level `cache_control` caches the whole prompt; otherwise the prefix runs through the
    last message holding a marked block, or covers tools + system when only they are marked.
    The key includes the model, because caches are per model.
    """
    if canonical is None:
        canonical = canonical_json(params)
    marks = _marks(params, canonical)
    if not marks:
        return None
    messages = params.get("messages")
    count = len(messages) if isinstance(messages, list) else 0
    if "cache_control" not in params:
        count = _last_marked_message(messages) + 1
    prompt = prompt_parts(params, count)
    key = sha256_hex(canonical_json({"model": params.get("model"), "prompt": prompt}))
    ttl: CacheTtl = "1h" if any(mark.get("ttl") == "1h" for mark in marks) else "5m"
    return CachePrefix(key, _prompt_tokens(prompt, _may_hold_binary(canonical)), ttl)


def _marks(params: dict[str, Any], canonical: bytes) -> list[dict[str, Any]]:
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

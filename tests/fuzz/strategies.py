"""Hypothesis strategies for hostile and valid task messages, shared by the fuzz tests."""

import json
from datetime import UTC
from typing import Any

from hypothesis import strategies as st

MODEL = "claude-sonnet-4-6"
TOKEN = r"\A[A-Za-z0-9_-]{1,64}\Z"

# Characters that have broken id handling elsewhere: lone surrogates, bidi overrides,
# zero-width and other format characters, NUL and line breaks, look-alike digits and letters.
ODD_CHARS = st.one_of(
    st.characters(categories=["Cs"]),
    st.sampled_from(["\u202e", "\u200f", "\u200b", "\u200d", "\ufeff", "\x00", "\n", "\r",
                     "\t", " ", ".", "*", ">", "\u0660", "\uff11", "\u0430", "\u00e9", "\U0001f600"]),
    st.characters(categories=["Cc", "Cf", "Zs", "Nd", "L"]),
)
ODD_TEXT = st.text(ODD_CHARS, max_size=80)
# What a surrogate-free JSON string can hold (what a well-behaved client sends).
CLEAN_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


def json_values(text: st.SearchStrategy[str] = CLEAN_TEXT,
                max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value (no NaN or infinities, which JSON does not have)."""
    scalars = (st.none() | st.booleans() | st.integers()
               | st.floats(allow_nan=False, allow_infinity=False) | text)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(text, inner, max_size=4), max_leaves=max_leaves)


def params(max_tokens: int) -> st.SearchStrategy[dict[str, Any]]:
    """A Messages API body that intake accepts, with some optional fields passed through."""
    messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                                               "content": CLEAN_TEXT}), min_size=1, max_size=3)
    optional = st.fixed_dictionaries({}, optional={
        "system": CLEAN_TEXT,
        "temperature": st.floats(0, 1),
        "stop_sequences": st.lists(CLEAN_TEXT, max_size=2),
        "tools": st.lists(st.fixed_dictionaries({"name": st.from_regex(TOKEN),
                                                 "input_schema": json_values(max_leaves=6)}),
                          max_size=2),
        "stream": st.just(False),
    })
    return st.builds(lambda required, extra: {**required, **extra},
                     st.fixed_dictionaries({"model": st.just(MODEL),
                                            "max_tokens": st.integers(1, max_tokens),
                                            "messages": messages}),
                     optional)


def valid_tasks(max_tokens: int) -> st.SearchStrategy[dict[str, Any]]:
    """A task body as the contract describes it; every one must be accepted."""
    return st.fixed_dictionaries(
        {"task_id": st.from_regex(TOKEN), "params": params(max_tokens)},
        optional={"metadata": st.dictionaries(CLEAN_TEXT, json_values(), max_size=4),
                  "route": st.sampled_from(["auto", "batch", "realtime"]),
                  "deadline": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
                  "webhook": st.from_regex(TOKEN)})


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    """JSON of `depth` levels of alternating objects and lists around `leaf`, outermost an
    object (written directly: json.dumps itself recurses and gives up near 1,000 levels)."""
    opens = [b'{"k":' if (depth - level) % 2 else b"[" for level in range(depth)]
    closes = [b"}" if part.startswith(b"{") else b"]" for part in opens]
    return b"".join(reversed(opens)) + leaf + b"".join(closes)


def placed(body: dict[str, Any], path: str, value: bytes) -> bytes:
    """`body` as JSON with the raw JSON `value` at `path` (`field` or `field.sub`)."""
    marker = "\x00placed\x00"
    head, _, tail = path.partition(".")
    body = {**body, head: {**body.get(head, {}), tail: marker} if tail else marker}
    return encode(body).replace(json.dumps(marker).encode(), value)


def encode(value: Any) -> bytes:
    """JSON bytes; a lone surrogate goes out as its `\\udXXX` escape, as a sloppy client sends."""
    return json.dumps(value).encode()


def with_duplicate_key(body: dict[str, Any], key: str, first: Any) -> bytes:
    """`body` as JSON with `key` written twice: first `first`, then the body's own value."""
    inner = encode(body)[1:]
    head = f"{json.dumps(key)}: {json.dumps(first)}, ".encode()
    return b"{" + head + inner if inner != b"}" else b"{" + head[:-2] + b"}"

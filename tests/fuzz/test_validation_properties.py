"""Properties of intake's validator on hostile input: it never raises; a rejection has a reason
and a message that can be published; an accepted task is within every limit and survives the
hops after intake (the internal message, the manifest row, the API request)."""

import json
import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from batchbus.services.batcher.batching import custom_id, encode_request
from batchbus.services.intake.validation import MAX_DEPTH, Limits, Rejection, validate_task
from batchbus.shared import subjects
from batchbus.shared.models import AcceptedTask, ErrorInfo, ManifestEntry, Result, Task
from tests.fuzz.strategies import (
    MODEL,
    ODD_TEXT,
    TOKEN,
    encode,
    json_values,
    nested,
    placed,
    valid_tasks,
    with_duplicate_key,
)

LIMITS = Limits(allowed_models=frozenset({MODEL}), max_tokens=4096, max_task_bytes=16 * 1024)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
REASON = re.compile(r"[a-z_]{3,40}")  # a short code: it is a metric label
MAX_RESULT_BYTES = 2048  # a rejection echoes only a bounded piece of what it was sent
# Where a wrong value can go: a top-level field, or a required field of params.
FIELDS = ["task_id", "params", "metadata", "deadline", "route", "webhook",
          "params.model", "params.max_tokens", "params.messages", "params.stream"]


def checked(raw: bytes) -> Task | Rejection:
    """Validates `raw` and asserts what must hold of any outcome."""
    outcome = validate_task(raw, LIMITS)
    if isinstance(outcome, Rejection):
        assert REASON.fullmatch(outcome.reason) and outcome.message.strip()
        assert outcome.task_id is None or subjects.is_token(outcome.task_id)
        result = Result(task_id=outcome.task_id or "invalid-1", tenant="t", status="rejected",
                        error=ErrorInfo(type="invalid_task", message=outcome.message))
        assert len(result.model_dump_json().encode()) <= MAX_RESULT_BYTES  # encodable, small
        return outcome
    assert isinstance(outcome, Task)
    assert subjects.is_token(outcome.task_id) and len(raw) <= LIMITS.max_task_bytes
    assert outcome.params["model"] in (LIMITS.allowed_models or ())
    assert 1 <= outcome.params["max_tokens"] <= LIMITS.max_tokens
    assert isinstance(outcome.params["messages"], list) and outcome.params["messages"]
    assert outcome.params.get("stream", False) is False
    assert_carried(outcome)
    return outcome


def assert_carried(task: Task) -> None:
    """The accepted task reaches the API unchanged: through the internal message, the
    manifest row and the request body the batcher sends."""
    accepted = AcceptedTask(tenant="t", task_id=task.task_id, params=task.params,
                            metadata=task.metadata, published_at=NOW)
    again = AcceptedTask.model_validate_json(accepted.model_dump_json())
    assert again.params == task.params and again.metadata == task.metadata
    entry = ManifestEntry(custom_id=custom_id("t", task.task_id, 1), tenant="t",
                          task_id=task.task_id, attempt=1, model=task.params["model"],
                          metadata=task.metadata, published_at=NOW, accepted_seq=1)
    assert ManifestEntry.from_row(entry.to_row()) == entry
    assert json.loads(encode_request(entry.custom_id, again.params)) == {
        "custom_id": entry.custom_id, "params": task.params}


def replace(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    head, _, tail = path.partition(".")
    if not tail:
        return {**body, head: value}
    return {**body, head: {**body[head], tail: value}}


@given(st.binary(max_size=1024))
@example(b"\xff\xfe{}")
@example(b'{"task_id": "t", "params": {"model": "claude-sonnet-4-6", "max_tokens": 5, '
         b'"messages": [1], "temperature": NaN}}')
@example(b'{"task_id": "t", "params": {"max_tokens": Infinity}}')
@example(b'{"task_id": "t\\u0000"}')
@example(b'{"task_id": "t", "params": {"model": "claude-sonnet-4-6", "max_tokens": 1'
         + b"9" * 4000 + b', "messages": [1]}}')
@example(b'{"task_id": "t", "params": {"model": "claude-sonnet-4-6", "max_tokens": 5, '
         b'"messages": [1]}, "metadata": {"a": "\\ud800"}}')
def test_arbitrary_bytes_are_judged_never_raised(raw: bytes) -> None:
    checked(raw)


@given(json_values(ODD_TEXT, max_leaves=30))
def test_arbitrary_json_values_are_judged(value: Any) -> None:
    checked(encode(value))


@given(valid_tasks(LIMITS.max_tokens), st.sampled_from(FIELDS), json_values(ODD_TEXT))
def test_any_value_in_any_field_is_judged(body: dict[str, Any], field: str, value: Any) -> None:
    checked(encode(replace(body, field, value)))


@given(valid_tasks(LIMITS.max_tokens), st.sampled_from(["task_id", "params.model",
                                                        "params.system", "metadata.note"]),
       st.integers(0, 3 * LIMITS.max_task_bytes), st.sampled_from(["x", "é", "\U0001f600"]))
def test_huge_strings_are_rejected_for_size_not_crashed(
        body: dict[str, Any], field: str, size: int, char: str) -> None:
    body.setdefault("metadata", {})
    raw = encode(replace(body, field, char * size))
    outcome = checked(raw)
    if len(raw) > LIMITS.max_task_bytes:
        assert isinstance(outcome, Rejection)
        assert outcome.reason == ("bad_task_id" if field == "task_id" else "too_large")


@given(valid_tasks(LIMITS.max_tokens), st.sampled_from(["metadata", "params.tools"]),
       st.integers(1, 3000))
def test_deep_nesting_is_rejected_within_the_bound_of_later_hops(
        body: dict[str, Any], where: str, depth: int) -> None:
    raw = placed(body, where, nested(depth))
    deepest = depth + where.count(".") + 1  # the task object and the field's parents first
    outcome = checked(raw)
    if deepest > MAX_DEPTH:  # json.loads itself gives up near the recursion limit
        assert isinstance(outcome, Rejection)
        assert outcome.reason in {"too_deep", "too_large", "malformed_json"}
    elif len(raw) <= LIMITS.max_task_bytes:
        assert isinstance(outcome, Task)


@given(st.integers(1, 100_000), valid_tasks(LIMITS.max_tokens))
@example(10**6, {"task_id": "t", "params": {}})
def test_a_deeply_nested_message_is_rejected(depth: int, body: dict[str, Any]) -> None:
    assert isinstance(checked(nested(depth, encode(body))), Rejection)


@given(valid_tasks(LIMITS.max_tokens), ODD_TEXT | st.builds(str.__add__, st.from_regex(TOKEN),
                                                             ODD_TEXT))
@example({"task_id": "", "params": {}}, "abc\n")
@example({"task_id": "", "params": {}}, "\ud800")
def test_odd_unicode_in_an_id_is_rejected_unless_it_is_a_plain_token(
        body: dict[str, Any], task_id: str) -> None:
    outcome = checked(encode({**body, "task_id": task_id}))
    plain = re.fullmatch(TOKEN, task_id) is not None
    assert (not isinstance(outcome, Rejection) or outcome.reason != "bad_task_id") == plain


@given(valid_tasks(LIMITS.max_tokens), st.sampled_from(["task_id", "params", "metadata"]),
       json_values(ODD_TEXT))
def test_a_duplicate_key_counts_once_and_the_last_value_wins(
        body: dict[str, Any], key: str, first: Any) -> None:
    body.setdefault("metadata", {})
    outcome = checked(with_duplicate_key(body, key, first))
    assert isinstance(outcome, Task) and outcome.model_dump() == checked(encode(body)).model_dump()


@given(valid_tasks(LIMITS.max_tokens))
def test_valid_tasks_are_accepted_with_their_fields_intact(body: dict[str, Any]) -> None:
    raw = encode(body)
    if len(raw) > LIMITS.max_task_bytes:  # the strategy stays far below; be explicit anyway
        return
    outcome = checked(raw)
    assert isinstance(outcome, Task), outcome
    assert outcome.task_id == body["task_id"] and outcome.params == body["params"]
    assert outcome.metadata == body.get("metadata", {})
    assert outcome.route == body.get("route", "auto")
    assert outcome.webhook == body.get("webhook")
    deadline = body.get("deadline")
    assert outcome.deadline == (datetime.fromisoformat(deadline) if deadline else None)
    assert json.loads(outcome.model_dump_json())["params"] == body["params"]

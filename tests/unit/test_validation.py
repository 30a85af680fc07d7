"""Intake validation: each kind of malformed task gets its own clear reason."""

import json

import pytest

from batchbus.services.intake.validation import Limits, Rejection, validate_task
from batchbus.shared.models import Task
from tests.fuzz.strategies import nested

LIMITS = Limits(allowed_models=frozenset({"claude-sonnet-4-6"}), max_tokens=4096,
                max_task_bytes=10_000)


def task(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "task_id": "t-1",
        "params": {"model": "claude-sonnet-4-6", "max_tokens": 100,
                   "messages": [{"role": "user", "content": "hi"}]},
    }
    body.update(overrides)
    return body


def params(**overrides: object) -> dict[str, object]:
    p = dict(task()["params"])  # type: ignore[call-overload]
    for key, value in overrides.items():
        if value is None:
            p.pop(key)
        else:
            p[key] = value
    return p


def test_a_good_task_passes_with_params_untouched() -> None:
    extra = params(system="be brief", tools=[{"name": "x", "input_schema": {}}])
    outcome = validate_task(json.dumps(task(params=extra, metadata={"k": 1})).encode(), LIMITS)
    assert isinstance(outcome, Task)
    assert outcome.params == extra and outcome.metadata == {"k": 1}


@pytest.mark.parametrize("raw, reason", [
    (b"{not json", "malformed_json"),
    (b"\xff\xfe", "malformed_json"),
    (b"[1, 2]", "not_an_object"),
    (b"null", "not_an_object"),
    (b"[" * 100_000 + b"]" * 100_000, "malformed_json"),
])
def test_unreadable_bodies(raw: bytes, reason: str) -> None:
    outcome = validate_task(raw, LIMITS)
    assert isinstance(outcome, Rejection) and outcome.reason == reason
    assert outcome.task_id is None


@pytest.mark.parametrize("body, reason", [
    (task(task_id=None), "bad_task_id"),
    (task(task_id="has space"), "bad_task_id"),
    (task(task_id="x" * 65), "bad_task_id"),
    (task(task_id=12), "bad_task_id"),
    (task(task_id="ünïcode"), "bad_task_id"),
])
def test_bad_task_ids(body: dict[str, object], reason: str) -> None:
    outcome = validate_task(json.dumps(body).encode(), LIMITS)
    assert isinstance(outcome, Rejection) and outcome.reason == reason
    assert "task_id" in outcome.message


@pytest.mark.parametrize("body, reason, words", [
    (task(params="nope"), "bad_params", "params"),
    (task(params=params(model=None)), "missing_field", "model"),
    (task(params=params(max_tokens=None, messages=None)), "missing_field", "max_tokens, messages"),
    (task(params=params(stream=True)), "stream_not_supported", "stream"),
    (task(params=params(model="gpt-4")), "model_not_allowed", "gpt-4"),
    (task(params=params(max_tokens=5000)), "max_tokens_too_large", "4096"),
    (task(params=params(max_tokens=0)), "bad_max_tokens", ">= 1"),
    (task(params=params(max_tokens=True)), "bad_max_tokens", "integer"),
    (task(params=params(messages=[])), "bad_messages", "non-empty"),
    (task(colour="red"), "unknown_field", "colour"),
    (task(metadata="x"), "bad_field", "metadata"),
    (task(route="fast"), "bad_field", "route"),
    (task(deadline="tomorrow"), "bad_field", "deadline"),
    (task(params=params(system="x" * 20_000)), "too_large", "10000"),
])
def test_each_malformation_has_a_clear_reason(body: dict[str, object], reason: str,
                                              words: str) -> None:
    outcome = validate_task(json.dumps(body).encode(), LIMITS)
    assert isinstance(outcome, Rejection), outcome
    assert outcome.reason == reason
    assert words in outcome.message
    assert outcome.task_id == body["task_id"]


def test_without_an_allow_list_any_model_passes() -> None:
    open_limits = Limits(allowed_models=None, max_tokens=4096, max_task_bytes=10_000)
    outcome = validate_task(json.dumps(task(params=params(model="new-model"))).encode(),
                            open_limits)
    assert isinstance(outcome, Task)


@pytest.mark.parametrize("depth", [900, 990, 1100])
def test_the_verdict_on_deep_nesting_does_not_depend_on_the_callers_stack(depth: int) -> None:
    raw = b'{"task_id": "deep", "metadata": ' + nested(depth) + b"}"

    def called_from(frames: int) -> object:
        return called_from(frames - 1) if frames else validate_task(raw, LIMITS)

    shallow, deep = called_from(0), called_from(300)
    assert isinstance(shallow, Rejection) and shallow == deep

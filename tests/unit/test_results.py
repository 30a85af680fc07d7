"""Classifying result lines and building final results."""

from datetime import UTC, datetime
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest
from pydantic import BaseModel, TypeAdapter

from batchbus.services.notifier.results import (
    Final,
    Retry,
    attempt_record,
    classify,
    missing_result,
    result_fields,
    retry_delay,
)
from batchbus.shared.models import (
    Cost,
    CostFields,
    ErrorInfo,
    ManifestEntry,
    Refusal,
    RefusalFields,
    Result,
    ResultFields,
    Usage,
    UsageFields,
)
from batchbus.shared.pricing import default_prices


def errored(kind: str) -> dict[str, object]:
    return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": "m"}}}


@pytest.mark.parametrize("line, attempt, expected", [
    (errored("overloaded_error"), 1, Retry("overloaded_error")),
    (errored("api_error"), 2, Retry("api_error")),
    (errored("api_error"), 3, "errored"),
    (errored("invalid_request_error"), 1, "errored"),
    (errored("not_found_error"), 1, "errored"),
    ({"type": "expired"}, 1, Retry("expired")),
    ({"type": "expired"}, 3, "expired"),
    ({"type": "canceled"}, 1, "canceled"),
    ({"type": "mystery"}, 1, "errored"),
    (missing_result(), 1, Retry("api_error")),
])
def test_classify(line: dict[str, object], attempt: int, expected: object) -> None:
    outcome = classify(line, attempt, max_attempts=3)
    if isinstance(expected, Retry):
        assert outcome == expected
    else:
        assert isinstance(outcome, Final) and outcome.status == expected
        assert outcome.error is not None and outcome.error.message


def test_retryable_outcomes_on_the_last_attempt_are_dead_letters() -> None:
    for line in (errored("overloaded_error"), {"type": "expired"}):
        outcome = classify(line, 3, max_attempts=3)
        assert isinstance(outcome, Final) and outcome.exhausted
    permanent = classify(errored("invalid_request_error"), 1, max_attempts=3)
    assert isinstance(permanent, Final) and not permanent.exhausted


def test_history_and_back_off() -> None:
    record = attempt_record(errored("api_error"), 2, "msgbatch_x")
    assert (record.attempt, record.outcome, record.batch_id) == (2, "api_error", "msgbatch_x")
    assert attempt_record({"type": "expired"}, 1, "b").outcome == "expired"
    assert [retry_delay(a, 30, 100) for a in (1, 2, 3, 4)] == [30, 60, 100, 100]


def test_a_final_result_echoes_the_task_and_prices_the_usage() -> None:
    entry = ManifestEntry(custom_id="c-a1", tenant="acme", task_id="t1", attempt=2,
                          model="claude-sonnet-4-6", metadata={"ticket": 7},
                          published_at=datetime.now(UTC), accepted_seq=9)
    message = {"id": "msg_1", "usage": {"input_tokens": 500, "output_tokens": 200}}
    outcome = classify({"type": "succeeded", "message": message}, 2, 3)
    assert isinstance(outcome, Final)
    result = Result.model_validate(result_fields(entry, outcome, "msgbatch_1",
                                                 default_prices()))
    assert (result.tenant, result.task_id, result.status) == ("acme", "t1", "succeeded")
    assert result.attempts == 2 and result.metadata == {"ticket": 7}
    assert result.usage is not None and result.usage.input_tokens == 500
    assert result.cost is not None
    assert (result.cost.realtime_usd, result.cost.batch_usd) == (0.0045, 0.00225)
    assert result.error is None and result.route == "batch"


# The notifier's per-result dicts and the models whose JSON they publish.
AS_DICT: dict[Any, Any] = {Usage: UsageFields, Cost: CostFields, Refusal: RefusalFields}


def as_dict(annotation: Any) -> Any:
    """A model field's annotation with its nested models as their dicts' shapes."""
    if get_origin(annotation) in (Union, UnionType):
        return Union[tuple(as_dict(a) for a in get_args(annotation))]  # noqa: UP007
    return AS_DICT.get(annotation, annotation)


@pytest.mark.parametrize("model, fields", [(Result, ResultFields), *AS_DICT.items()])
def test_the_fields_mirror_their_model(model: type[BaseModel], fields: Any) -> None:
    hints = get_type_hints(fields)
    assert list(hints) == list(model.model_fields)  # the JSON's keys, in its order
    assert hints == {name: as_dict(f.annotation) for name, f in model.model_fields.items()}
    assert fields.__required_keys__ == set(hints)  # the fast path sets every one


@pytest.mark.parametrize("line", [
    {"type": "succeeded", "message": {"usage": {"input_tokens": 5, "output_tokens": 2}}},
    {"type": "succeeded", "message": {"id": "msg_1"}},  # no usage
    errored("invalid_request_error"),
    {"type": "canceled"},
])
@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "claude-imaginary-9"])
def test_result_fields_hold_their_declared_types(line: dict[str, Any], model: str) -> None:
    entry = ManifestEntry(custom_id="c", tenant="acme", task_id="t1", attempt=1, model=model,
                          metadata={}, published_at=datetime.now(UTC), accepted_seq=1)
    outcome = classify(line, 1, 3)
    assert isinstance(outcome, Final)
    fields = result_fields(entry, outcome, "b", default_prices())
    # Strict: an int where a float is declared, or a dict for the ErrorInfo, fails.
    assert TypeAdapter(ResultFields).validate_python(fields, strict=True) == fields
    priced = outcome.message is not None and model != "claude-imaginary-9"
    assert (fields["cost"] is not None) == priced
    assert fields["error"] is None or isinstance(fields["error"], ErrorInfo)

"""The notifier's cheap paths publish and count exactly what the Result models would."""

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from batchbus.services.notifier.accounting import Accounting
from batchbus.services.notifier.delivery import result_raw
from batchbus.services.notifier.metrics import NotifierMetrics
from batchbus.services.notifier.results import (
    Final,
    canceled,
    classify,
    missing_result,
    result_fields,
)
from batchbus.shared import subjects
from batchbus.shared.models import ErrorInfo, ManifestEntry, Reservation, Result
from batchbus.shared.pricing import default_prices
from batchbus.shared.publishing import result_message

USAGE = {"input_tokens": 1234, "output_tokens": 77, "cache_creation_input_tokens": 300,
         "cache_read_input_tokens": 4000, "service_tier": "batch",
         "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}}
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
           "content": [{"type": "text", "text": "Ünïcode ✓ \U0001f680 \"quoted\" \\ </tag>\n",
                        "citations": None}],
           "stop_reason": "end_turn", "stop_sequence": None, "usage": USAGE,
           "odd": [1.5, 1e-7, 123456789012345678901234567890, -0.0, True, {}, [],
                   float("nan"), float("inf")]}


def entry(model: str = "claude-sonnet-4-6", **extra: Any) -> ManifestEntry:
    fields = {"custom_id": "c-a1", "tenant": "acme", "task_id": "t-1", "attempt": 2,
              "model": model, "metadata": {"ticket": 7, "nested": {"é": [1, 2.25, None]}},
              "published_at": datetime.now(UTC) - timedelta(seconds=3), "accepted_seq": 9}
    return ManifestEntry.model_validate({**fields, **extra})


OUTCOMES = [
    classify({"type": "succeeded", "message": MESSAGE}, 1, 3),
    classify({"type": "succeeded", "message": {"id": "msg_2"}}, 1, 3),  # no usage at all
    classify({"type": "errored", "error": {"error": {"type": "invalid_request_error",
                                                     "message": "bad ✗"}}}, 1, 3),
    classify(missing_result(), 3, 3),
    classify({"type": "expired"}, 3, 3),
    classify({"type": "canceled"}, 1, 3),
    canceled({"type": "succeeded", "message": MESSAGE}),
    canceled({"type": "expired"}),
    classify({"type": "succeeded", "message": {  # refused: billed, with its reason
        **MESSAGE, "stop_reason": "refusal",
        "stop_details": {"type": "refusal", "category": "cyber", "explanation": "ñ ✗"}}}, 3, 3),
    classify({"type": "succeeded", "message": {**MESSAGE, "stop_reason": "refusal"}}, 1, 3),
]
# What the batcher copies from the task: none, or warnings and an earlier refusal's cost.
EXTRAS: list[dict[str, Any]] = [
    {}, {"warnings": ["claude-opus-4-5 retires on 2027-01-22 ✓"], "fallback_model": "m",
         "prior_cost": {"batch_usd": 0.1, "realtime_usd": 0.2, "saved_usd": 0.1}}]


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "claude-haiku-5-5", "claude-imaginary-9"])
@pytest.mark.parametrize("webhook", [None, "crm"])
@pytest.mark.parametrize("extra", EXTRAS)
def test_a_published_result_is_byte_for_byte_the_models(outcome: Final, model: str,
                                                         webhook: str | None,
                                                         extra: dict[str, Any]) -> None:
    task = entry(model, webhook=webhook, **extra)
    fields = result_fields(task, outcome, "msgbatch_1", default_prices())
    model_result = Result.model_validate(result_fields(task, outcome, "msgbatch_1", default_prices()))
    expected = result_message(model_result, subjects.result_msg_id("acme", "t-1"), webhook)
    assert result_raw(fields, webhook) == expected
    assert list(json.loads(expected.payload)) == list(Result.model_fields)


def test_a_window_counts_what_each_result_would() -> None:
    prices = default_prices()
    finals = [(result_fields(entry(model, **extra), outcome, "b", prices), entry(model, **extra))
              for model in ("claude-sonnet-4-6", "claude-haiku-5-5", "claude-imaginary-9")
              for outcome in OUTCOMES for extra in EXTRAS]
    by_window, by_result = CollectorRegistry(), CollectorRegistry()
    Accounting(NotifierMetrics(by_window), prices).results(finals)
    one_by_one = Accounting(NotifierMetrics(by_result), prices)
    for fields, task in finals:
        one_by_one.final(Result.model_validate(fields), task.model, task.published_at,
                         task.prior_cost)
    assert samples(by_window) == samples(by_result)
    assert samples(by_window)["batchbus_unknown_model_results_total"] == 2 * 5
    assert samples(by_window)['batchbus_refusals_total{"category": "cyber"}'] == 3 * 2


def samples(registry: CollectorRegistry) -> dict[str, float]:
    """Every batchbus sample but the latency's sum (the clock moved between the two); the
    process's own series (memory, CPU) move on their own."""
    found: dict[str, float] = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name.startswith("batchbus_") and s.name != "batchbus_task_latency_seconds_sum" \
                    and not s.name.endswith("_created"):
                key = s.name + json.dumps(s.labels, sort_keys=True)
                found[key if s.labels else s.name] = round(s.value, 12)
    return found


def test_rows_read_by_either_parser() -> None:
    # A row json.dumps wrote (before rows were written by pydantic's encoder) with a lone
    # surrogate escaped: only json.loads reads it. Intake now rejects such text.
    odd = json.dumps(["c-a1", "acme", "t-1", 2, "m", {"k": "\ud800 lone"},
                      "2026-11-27T00:00:00+00:00", 9]).encode()
    assert ManifestEntry.from_row(odd).metadata == {"k": "\ud800 lone"}
    full = entry(webhook="crm", reservation=Reservation(day=date(2026, 11, 27),
                                                       usd=Decimal("0.0123")))
    assert ManifestEntry.from_row(full.to_row()) == full
    old = json.dumps(["c-a1", "acme", "t-1", 2, "m", {}, "2026-11-27T00:00:00+00:00", 9])
    assert ManifestEntry.from_row(old.encode()).webhook is None


def test_error_info_survives() -> None:
    outcome = Final("errored", error=ErrorInfo(type="api_error", message="m"))
    fields = result_fields(entry(), outcome, "b", default_prices())
    assert json.loads(result_raw(fields, None).payload)["error"] == {"type": "api_error",
                                                                     "message": "m"}

"""Refused answers: a succeeded line with stop_reason "refusal" is billed; with a fallback model
and attempts left, the task goes once more on that model, carrying what the refusal cost."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from batchbus.services.notifier.accounting import Accounting
from batchbus.services.notifier.metrics import NotifierMetrics
from batchbus.services.notifier.realtime import realtime_result
from batchbus.services.notifier.results import (
    Fallback,
    Final,
    add_cost,
    billed,
    canceled,
    classify,
    fallback_task,
    last_attempt,
    refusal_of,
    refused_attempt,
    result_fields,
    with_prior,
    with_prior_usd,
)
from batchbus.shared.models import (
    AcceptedTask,
    Attempt,
    Cost,
    ManifestEntry,
    Refusal,
    Result,
    ResultFields,
)
from batchbus.shared.pricing import default_prices

REFUSED_BY, FALLBACK = "claude-opus-5-5", "claude-sonnet-4-6"
USAGE = {"input_tokens": 2000, "output_tokens": 10}


def refused(category: str | None = "cyber", explanation: str | None = "declined") -> dict[str, Any]:
    details = {"type": "refusal", "category": category, "explanation": explanation}
    return {"id": "msg_r", "type": "message", "role": "assistant", "model": REFUSED_BY,
            "content": [], "stop_reason": "refusal", "stop_details": details, "usage": USAGE}


def line(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "succeeded", "message": message}


def entry(**extra: Any) -> ManifestEntry:
    fields = {"custom_id": "c-a1", "tenant": "acme", "task_id": "t-1", "attempt": 1,
              "model": REFUSED_BY, "metadata": {}, "accepted_seq": 3,
              "published_at": datetime.now(UTC) - timedelta(seconds=2)}
    return ManifestEntry.model_validate({**fields, **extra})


def task(**extra: Any) -> AcceptedTask:
    fields = {"tenant": "acme", "task_id": "t-1", "params": {"model": REFUSED_BY, "max_tokens": 9,
                                                             "messages": []},
              "published_at": datetime(2026, 12, 6, tzinfo=UTC), "fallback_model": FALLBACK,
              "warnings": ["w"], "betas": ["b"], "webhook": "crm"}
    return AcceptedTask.model_validate({**fields, **extra})


def test_only_a_refusal_stop_reason_is_a_refusal() -> None:
    assert refusal_of(refused()) == {"category": "cyber", "explanation": "declined"}
    assert refusal_of(refused(None, None)) == {"category": None, "explanation": None}
    assert refusal_of({"stop_reason": "refusal"}) == {"category": None, "explanation": None}
    assert refusal_of({"stop_reason": "end_turn", "stop_details": {"category": "x"}}) is None
    assert refusal_of({}) is None


def test_a_refusal_with_a_fallback_and_attempts_left_goes_to_the_fallback() -> None:
    outcome = classify(line(refused()), 1, 3, FALLBACK)
    assert outcome == Fallback(FALLBACK, refused(), {"category": "cyber",
                                                     "explanation": "declined"})
    # No fallback, or no attempt left: the refused answer is the final, succeeded result.
    for final in (classify(line(refused()), 1, 3), classify(line(refused()), 3, 3, FALLBACK),
                  last_attempt(line(refused()), 1)):
        assert final == Final("succeeded", message=refused())
    # An answer that is not refused never falls back.
    assert classify(line({"stop_reason": "end_turn"}), 1, 3, FALLBACK) == Final(
        "succeeded", message={"stop_reason": "end_turn"})


def test_a_refused_final_result_is_succeeded_billed_and_says_why() -> None:
    prices = default_prices()
    outcome = classify(line(refused(None)), 1, 3)
    assert isinstance(outcome, Final)
    fields = result_fields(entry(warnings=["retires soon"]), outcome, "msgbatch_1", prices)
    result = Result.model_validate(fields)
    assert result.status == "succeeded" and result.refusal == Refusal(explanation="declined")
    assert result.usage is not None and result.usage.input_tokens == 2000
    assert result.cost is not None and result.cost.batch_usd > 0
    assert result.warnings == ["retires soon"]
    assert TypeAdapter(ResultFields).validate_python(fields, strict=True) == fields
    # An owner's cancel keeps the answer that ran, and what it was.
    cancel = result_fields(entry(), canceled(line(refused())), "b", prices)
    assert cancel["status"] == "canceled" and cancel["refusal"] is not None


def test_the_next_attempt_runs_once_on_the_fallback_and_carries_the_cost() -> None:
    prices = default_prices()
    usage, cost = billed(refused(), REFUSED_BY, prices)
    assert usage["input_tokens"] == 2000 and cost is not None
    earlier = Cost(batch_usd=0.5, realtime_usd=1.0, saved_usd=0.5)
    first = Attempt(attempt=1, batch_id="b0", outcome="expired")
    attempt = refused_attempt(2, "msgbatch_1", REFUSED_BY, {"category": "cyber",
                                                             "explanation": None}, cost)
    assert (attempt.outcome, attempt.message, attempt.model) == ("refusal", "cyber", REFUSED_BY)
    assert attempt.cost == Cost(**cost)
    current = task(attempt=2, history=[first], prior_cost=earlier,
                   not_before=datetime.now(UTC))
    nxt = fallback_task(current, attempt, FALLBACK)
    assert (nxt.attempt, nxt.params["model"], nxt.fallback_model, nxt.not_before) == (
        3, FALLBACK, None, None)
    assert nxt.params["max_tokens"] == 9 and current.params["model"] == REFUSED_BY
    assert nxt.history == [first, attempt]
    assert nxt.prior_cost == Cost(batch_usd=0.5 + cost["batch_usd"],
                                  realtime_usd=1.0 + cost["realtime_usd"],
                                  saved_usd=0.5 + cost["saved_usd"])
    # Everything else of the task goes with it.
    assert (nxt.warnings, nxt.betas, nxt.webhook, nxt.published_at) == (
        current.warnings, current.betas, current.webhook, current.published_at)
    # A real-time refusal: its failed calls join the history before it.
    call = Attempt(attempt=1, batch_id="", outcome="overloaded_error")
    assert fallback_task(task(), attempt, FALLBACK, [call]).history == [call, attempt]


def test_costs_add_up_and_an_unknown_price_is_never_guessed() -> None:
    prior = Cost(batch_usd=1.0, realtime_usd=2.0, saved_usd=1.0)
    own = {"batch_usd": 0.25, "realtime_usd": 0.5, "saved_usd": 0.25}
    assert with_prior(own, True, prior) == {"batch_usd": 1.25, "realtime_usd": 2.5,
                                            "saved_usd": 1.25}
    assert with_prior(own, True, None) == own
    assert with_prior(None, False, prior) == prior.model_dump()  # nothing of its own ran
    assert with_prior(None, True, prior) is None  # it ran on a model without a price
    assert add_cost(None, prior) == prior and add_cost(prior, None) == prior
    assert add_cost(None, None) is None
    assert with_prior_usd(Decimal("0.1"), Cost(batch_usd=0.2, realtime_usd=0.4,
                                                saved_usd=0.2)) == Decimal("0.3")
    assert with_prior_usd(None, prior) is None and with_prior_usd(Decimal(1), None) == 1


def test_a_final_result_after_a_fallback_costs_both_attempts() -> None:
    prices = default_prices()
    _, refused_cost = billed(refused(), REFUSED_BY, prices)
    assert refused_cost is not None
    prior = Cost(**refused_cost)
    answer = {"id": "msg_2", "stop_reason": "end_turn", "usage": USAGE}
    after = entry(attempt=2, model=FALLBACK, prior_cost=prior)
    fields = result_fields(after, Final("succeeded", message=answer), "b2", prices)
    _, own = billed(answer, FALLBACK, prices)
    assert own is not None and fields["cost"] is not None and fields["refusal"] is None
    assert fields["cost"]["batch_usd"] == own["batch_usd"] + prior.batch_usd
    # An attempt that did not run adds nothing: the result still shows what was spent.
    expired = Final("expired", exhausted=True)
    assert result_fields(after, expired, "b2", prices)["cost"] == prior.model_dump()


def money(registry: CollectorRegistry) -> dict[str, float]:
    names = ("batchbus_cost_batch_usd_total", "batchbus_cost_realtime_usd_total",
             "batchbus_cost_saved_usd_total")
    return {name: registry.get_sample_value(name) or 0.0 for name in names}


def test_the_refused_attempt_is_counted_when_billed_and_never_again() -> None:
    prices, registry = default_prices(), CollectorRegistry()
    accounting = Accounting(NotifierMetrics(registry), prices)
    usage, cost = billed(refused(), REFUSED_BY, prices)
    outcome = classify(line(refused()), 1, 3, FALLBACK)
    assert isinstance(outcome, Fallback) and cost is not None
    accounting.refused("t-1", REFUSED_BY, usage, cost, outcome.refusal)
    assert registry.get_sample_value("batchbus_refusals_total", {"category": "cyber"}) == 1
    assert registry.get_sample_value("batchbus_retries_total", {"reason": "refusal"}) == 1
    assert registry.get_sample_value("batchbus_tokens_total",
                                     {"kind": "input", "model": REFUSED_BY}) == 2000
    assert money(registry)["batchbus_cost_batch_usd_total"] == pytest.approx(cost["batch_usd"])
    # The final result on the fallback model carries the refusal's cost; counted, it adds
    # only its own. Money counted = money in the results.
    after = entry(attempt=2, model=FALLBACK, prior_cost=Cost(**cost))
    final = result_fields(after, Final("succeeded", message={"usage": USAGE}), "b2", prices)
    accounting.results([(final, after)])
    assert final["cost"] is not None
    assert money(registry) == pytest.approx({
        "batchbus_cost_batch_usd_total": final["cost"]["batch_usd"],
        "batchbus_cost_realtime_usd_total": final["cost"]["realtime_usd"],
        "batchbus_cost_saved_usd_total": final["cost"]["saved_usd"]})
    # A result that ran nothing after the refusal adds no money at all.
    accounting.results([(result_fields(after, Final("expired", exhausted=True), "b2", prices),
                         after)])
    assert money(registry)["batchbus_cost_batch_usd_total"] == pytest.approx(
        final["cost"]["batch_usd"])


def test_refusals_are_counted_by_category_and_none_when_unnamed() -> None:
    prices, registry = default_prices(), CollectorRegistry()
    accounting = Accounting(NotifierMetrics(registry), prices)
    finals = [result_fields(entry(), Final("succeeded", message=m), "b", prices)
              for m in (refused("bio"), refused(None), refused(None), {"stop_reason": "end_turn"})]
    accounting.results([(f, entry()) for f in finals])
    one_by_one = CollectorRegistry()
    each = Accounting(NotifierMetrics(one_by_one), prices)
    for f in finals:
        each.final(Result.model_validate(f), REFUSED_BY, entry().published_at)
    for labels, count in (({"category": "bio"}, 1), ({"category": "none"}, 2)):
        assert registry.get_sample_value("batchbus_refusals_total", labels) == count
        assert one_by_one.get_sample_value("batchbus_refusals_total", labels) == count
    assert registry.get_sample_value("batchbus_results_total", {"status": "succeeded"}) == 4


def test_a_real_time_result_carries_the_refusal_the_warnings_and_the_prior_cost() -> None:
    prices = default_prices()
    result = realtime_result(task(), "succeeded", 1, prices, message=refused())
    assert result.refusal == Refusal(category="cyber", explanation="declined")
    assert result.warnings == ["w"] and result.route == "realtime"
    assert result.cost is not None and result.cost.batch_usd == result.cost.realtime_usd
    prior = Cost(batch_usd=1.0, realtime_usd=2.0, saved_usd=1.0)
    again = realtime_result(task(prior_cost=prior), "succeeded", 2, prices, message=refused())
    assert again.cost is not None
    assert again.cost.batch_usd == pytest.approx(result.cost.batch_usd + 1.0)
    errored = realtime_result(task(prior_cost=prior), "canceled", 1, prices)
    assert errored.cost == prior and errored.warnings == ["w"] and errored.refusal is None
    assert json.loads(result.model_dump_json())["refusal"] == {"category": "cyber",
                                                                "explanation": "declined"}

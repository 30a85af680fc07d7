"""Sums for `batchbus cost` and the `submit --follow` summary: exact, per model."""

from decimal import Decimal
from typing import Any

from batchbus.cli.tally import UNKNOWN_MODEL, Tally, finals, usd_text
from batchbus.shared.models import Cost, ErrorInfo, Result, Usage


def result(task_id: str, status: str = "succeeded", model: str | None = "claude-sonnet-4-6",
           cost: tuple[float, float] | None = (0.1, 0.2), tokens: tuple[int, int] = (10, 5),
           ) -> Result:
    fields: dict[str, Any] = {"task_id": task_id, "tenant": "acme", "status": status}
    if model is not None:
        fields["message"] = {"model": model, "content": []}
        fields["usage"] = Usage(input_tokens=tokens[0], output_tokens=tokens[1])
    if cost is not None:
        batch, realtime = cost
        fields["cost"] = Cost(batch_usd=batch, realtime_usd=realtime, saved_usd=realtime - batch)
    if status != "succeeded":
        fields["error"] = ErrorInfo(type="invalid_request_error", message="bad")
    return Result(**fields)


def test_sums_are_exact_decimals_per_model() -> None:
    tally = Tally()
    for i in range(10):
        tally.add(result(f"s{i}"))  # 10 x 0.1 in floats is not 1.0; in Decimal it is
    tally.add(result("h", model="claude-haiku-4-5", cost=(0.25, 0.5), tokens=(7, 3)))
    sonnet, haiku = tally.models["claude-sonnet-4-6"], tally.models["claude-haiku-4-5"]
    assert sonnet.batch_usd == Decimal("1.0") and sonnet.realtime_usd == Decimal("2.0")
    assert sonnet.saved_usd == Decimal("1.0") and sonnet.input_tokens == 100
    assert (haiku.results, haiku.output_tokens, haiku.saved_usd) == (1, 3, Decimal("0.25"))
    total = tally.total
    assert total.batch_usd == Decimal("1.25") and total.realtime_usd == Decimal("2.5")
    assert total.saved_share == Decimal("0.5")
    # --json: every sum with the same USD_PLACES places, never 1.0 next to 1.25E-7.
    assert tally.models["claude-sonnet-4-6"].as_json()["batch_usd"] == "1.0000000000"


def test_statuses_failures_and_results_that_never_ran() -> None:
    tally = Tally()
    tally.add(result("ok"))
    tally.add(result("bad", status="errored", model=None, cost=None))
    tally.add(result("rej", status="rejected", model=None, cost=None))
    assert tally.statuses == {"succeeded": 1, "errored": 1, "rejected": 1}
    assert [r.task_id for r in tally.not_succeeded] == ["bad", "rej"]
    assert list(tally.models) == ["claude-sonnet-4-6"]  # only results that ran cost anything
    assert tally.count == 3
    # What ran plus what did not is every result: the cost table's count and the stored
    # count can agree.
    assert tally.ran == 1 and tally.not_ran == {"errored": 1, "rejected": 1}
    assert tally.ran + sum(tally.not_ran.values()) == tally.count == 3


def test_a_model_without_a_price_counts_tokens_but_no_dollars() -> None:
    tally = Tally()
    tally.add(result("x", model="claude-future-9", cost=None))
    cost = tally.models["claude-future-9"]
    assert (cost.results, cost.priced, cost.input_tokens) == (1, 0, 10)
    assert cost.batch_usd == 0 and cost.saved_share is None and tally.unpriced == 1


def test_a_cost_without_a_message_is_kept_under_an_unknown_model() -> None:
    tally = Tally()
    tally.add(Result(task_id="c", tenant="acme", status="canceled",
                     cost=Cost(batch_usd=0.5, realtime_usd=1.0, saved_usd=0.5)))
    assert tally.models[UNKNOWN_MODEL].batch_usd == Decimal("0.5")


def test_json_money_has_fixed_places_whatever_the_magnitude() -> None:
    assert [usd_text(Decimal(v)) for v in ("1", "1.25", "1.5E-8", "0.000123", "1234.5")] == [
        "1.0000000000", "1.2500000000", "0.0000000150", "0.0001230000", "1234.5000000000"]
    assert usd_text(Decimal("0.00000000005")) == "0.0000000000"  # half to even
    assert usd_text(Decimal("0.00000000015")) == "0.0000000002"


def test_finals_keep_one_result_per_task_the_latest_unless_it_is_a_stale_rejection() -> None:
    rejected = result("t1", status="rejected", model=None, cost=None)
    resent = result("t1")
    other = result("t2")
    late_copy = result("t2", status="rejected", model=None, cost=None)  # after t2 succeeded
    twice = [result("t3", status="rejected", model=None, cost=None),
             result("t3", status="rejected", model=None, cost=None)]
    found = finals([rejected, other, resent, late_copy, *twice])
    assert [(r.task_id, r.status) for r in found.kept] == \
        [("t2", "succeeded"), ("t1", "succeeded"), ("t3", "rejected")]
    assert found.kept[2] is twice[1]  # the latest rejection of a task never accepted
    assert found.superseded == [rejected, late_copy, twice[0]]
    assert found.superseded_at == {0, 3, 4}


def test_finals_tell_tenants_apart() -> None:
    mine, theirs = result("t1"), Result(task_id="t1", tenant="other", status="succeeded")
    assert finals([mine, theirs]).kept == [mine, theirs]

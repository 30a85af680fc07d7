"""Pure result handling: classify one result line and build the task's final Result, or the
task's next attempt when a refused request goes to its fallback model."""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic_core import to_json

from batchbus.shared.models import (
    AcceptedTask,
    Attempt,
    Cost,
    CostFields,
    ErrorInfo,
    ManifestEntry,
    RefusalFields,
    ResultFields,
    Status,
    Usage,
    UsageFields,
    parse_json,
)
from batchbus.shared.payloads import Stored
from batchbus.shared.pricing import PriceTable, TokenCounts

# Error types worth another attempt as they are; any other error is the request's own fault.
TRANSIENT_ERRORS = frozenset({"api_error", "overloaded_error", "rate_limit_error",
                              "timeout_error"})


@dataclass(frozen=True)
class Final:
    status: Status
    message: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    exhausted: bool = False  # a retryable outcome on the last attempt: a dead letter


@dataclass(frozen=True)
class Retry:
    reason: str  # low-cardinality: the error type, "expired" or "canceled"


@dataclass(frozen=True)
class Fallback:
    """A refused answer whose task goes once more, to its fallback model. The refused
    answer was billed: its message is kept for its usage."""

    model: str
    message: dict[str, Any]
    refusal: RefusalFields


def classify(result: dict[str, Any], attempt: int, max_attempts: int,
             fallback_model: str | None = None) -> Final | Retry | Fallback:
    """Decides a result line's fate; `result` is the line's `result` object."""
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message") or {}
        if fallback_model and attempt < max_attempts \
                and (refusal := refusal_of(message)) is not None:
            return Fallback(fallback_model, message, refusal)
        return Final("succeeded", message=message)
    if kind == "errored":
        inner = (result.get("error") or {}).get("error") or {}
        error = ErrorInfo(type=str(inner.get("type", "api_error")),
                          message=str(inner.get("message", "")))
        if error.type not in TRANSIENT_ERRORS:
            return Final("errored", error=error)
        if attempt < max_attempts:
            return Retry(error.type)
        return Final("errored", error=error, exhausted=True)
    if kind == "expired":
        if attempt < max_attempts:
            return Retry("expired")
        return Final("expired", error=ErrorInfo(
            type="expired", message=f"the batch expired before the request ran ({attempt} "
            "attempt(s))"), exhausted=True)
    if kind == "canceled":
        return Final("canceled", error=ErrorInfo(type="canceled", message="the batch was canceled"))
    return Final("errored", error=ErrorInfo(type="api_error",
                                            message=f"unknown result type {kind!r}"))


def refusal_of(message: dict[str, Any]) -> RefusalFields | None:
    """Why the model declined, for a reply with `stop_reason: "refusal"`; None for any other.
    A Claude 5 model that declines answers a succeeded line: only the stop reason tells."""
    if message.get("stop_reason") != "refusal":
        return None
    details = message.get("stop_details")
    details = details if isinstance(details, dict) else {}
    category, explanation = details.get("category"), details.get("explanation")
    return {"category": None if category is None else str(category),
            "explanation": None if explanation is None else str(explanation)}


def canceled(result: dict[str, Any]) -> Final:
    """The owner canceled the task: final, with the usage of a request that ran anyway."""
    message = result.get("message") if result.get("type") == "succeeded" else None
    return Final("canceled", message=message, error=ErrorInfo(
        type="canceled", message="canceled at the owner's request"
        + (" after the request had run" if message else "")))


def attempt_record(result: dict[str, Any], attempt: int, batch_id: str) -> Attempt:
    """How this attempt ended, for the task's history."""
    kind = str(result.get("type"))
    if kind == "errored":
        inner = (result.get("error") or {}).get("error") or {}
        return Attempt(attempt=attempt, batch_id=batch_id, outcome=str(inner.get("type")),
                       message=str(inner.get("message", "")))
    return Attempt(attempt=attempt, batch_id=batch_id, outcome=kind)


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Back-off before attempt `attempt + 1`: base, 2 x base, 4 x base ... up to cap."""
    return min(cap, base * 2.0 ** (attempt - 1))


def last_attempt(result: dict[str, Any], attempt: int) -> Final:
    """The final outcome of a line when no further attempt is possible."""
    outcome = classify(result, attempt, max_attempts=attempt)
    assert isinstance(outcome, Final)
    return outcome


def missing_result() -> dict[str, Any]:
    """What a request that is absent from its batch's results counts as: a transient error."""
    return {"type": "errored", "error": {"type": "error", "error": {
        "type": "api_error", "message": "the batch's results had no line for this request"}}}


def usage_of(message: dict[str, Any]) -> tuple[Usage, TokenCounts]:
    """A reply's usage, as the Result reports it and as it is priced."""
    tokens = TokenCounts.from_usage(message.get("usage") or {})
    return Usage(**usage_fields(tokens)), tokens


def usage_fields(tokens: TokenCounts) -> UsageFields:
    return {"input_tokens": tokens.input, "output_tokens": tokens.output,
            "cache_creation_input_tokens": tokens.cache_write_5m + tokens.cache_write_1h,
            "cache_read_input_tokens": tokens.cache_read}


def billed(message: dict[str, Any], model: str,
           prices: PriceTable) -> tuple[UsageFields, CostFields | None]:
    """A batch reply's usage and what it cost (None: the model has no price)."""
    tokens = TokenCounts.from_usage(message.get("usage") or {})
    return usage_fields(tokens), prices.cost_fields(model, tokens)


def with_prior(cost: CostFields | None, ran: bool, prior: Cost | None) -> CostFields | None:
    """A final result's cost: its own attempt's (`ran`: it has a reply) and the earlier
    billed attempts' (a refusal before its fallback). An attempt that ran on a model without
    a price leaves the total unknown; one that did not run cost nothing of its own."""
    if prior is None or (ran and cost is None):
        return cost
    if cost is None:
        return _plus(prior, 0.0, 0.0, 0.0)
    return _plus(prior, cost["batch_usd"], cost["realtime_usd"], cost["saved_usd"])


def add_cost(prior: Cost | None, cost: Cost | None) -> Cost | None:
    """The billed attempts' sum, with one more (None: no price, which adds nothing)."""
    if prior is None or cost is None:
        return prior or cost
    return Cost(**_plus(prior, cost.batch_usd, cost.realtime_usd, cost.saved_usd))


def _plus(prior: Cost, batch: float, realtime: float, saved: float) -> CostFields:
    return {"batch_usd": batch + prior.batch_usd, "realtime_usd": realtime + prior.realtime_usd,
            "saved_usd": saved + prior.saved_usd}


def with_prior_usd(spent: Decimal | None, prior: Cost | None) -> Decimal | None:
    """What a task spent in all, as its budget settles it: its final attempt's (None: no
    price, which leaves the total unknown) and its earlier billed attempts'."""
    if spent is None or prior is None:
        return spent
    return spent + prior.spent_usd


def refused_attempt(attempt: int, batch_id: str, model: str, refusal: RefusalFields,
                    cost: CostFields | None) -> Attempt:
    """A refused attempt for the task's history: its model and what it cost."""
    return Attempt(attempt=attempt, batch_id=batch_id, outcome="refusal",
                   message=refusal["category"] or "", model=model,
                   cost=None if cost is None else Cost(**cost))


def fallback_task(task: AcceptedTask, refused: Attempt, model: str,
                  earlier: Sequence[Attempt] = (),
                  stored: Stored | None = None) -> AcceptedTask:
    """The task's next attempt after a refusal, for the batch path: on the fallback model,
    at once (nothing to wait out), and only once (no fallback after it). The refused
    attempt's cost is carried, so the final result and the budget count it. `earlier`: the
    attempts since `task` that its history does not hold yet (failed real-time calls).

    A task with stored params needs them stored again on the fallback model (`with_model`),
    (`stored`): the batcher sends the object as it is, so the old one would go to the
    refusing model again."""
    if (task.params_object is None) != (stored is None):
        raise ValueError("stored params go to a fallback as a new object, inline ones inline")
    return task.model_copy(update={
        "attempt": refused.attempt + 1, "params": {**task.params, "model": model},
        "fallback_model": None, "not_before": None,
        "history": [*task.history, *earlier, refused],
        "prior_cost": add_cost(task.prior_cost, refused.cost),
        "params_object": stored.name if stored else None,
        "params_digest": stored.digest if stored else None})


def with_model(params: bytes, model: str) -> bytes:
    """Stored params (JSON) as a fallback sends them: the same, but on `model`."""
    return to_json({**parse_json(params), "model": model})


def stored_answer(fields: ResultFields, name: str) -> ResultFields:
    """The final result as published when its answer is stored under `name` (too large for
    one message): the same, without the answer."""
    return {**fields, "message": None, "message_object": name}


def result_fields(entry: ManifestEntry, final: Final, batch_id: str,
                  prices: PriceTable) -> ResultFields:
    """The task's final Result as its fields, in the model's order: `result_json` makes of
    them the bytes `Result.model_dump_json` would, without validating what we built."""
    usage: UsageFields | None = None
    cost: CostFields | None = None
    refusal: RefusalFields | None = None
    if final.message is not None:
        usage, cost = billed(final.message, entry.model, prices)
        refusal = refusal_of(final.message)
    if entry.prior_cost is not None:
        cost = with_prior(cost, final.message is not None, entry.prior_cost)
    return {"task_id": entry.task_id, "tenant": entry.tenant, "status": final.status,
            "message": final.message, "error": final.error, "usage": usage, "cost": cost,
            "batch_id": batch_id, "route": "batch", "attempts": entry.attempt,
            "metadata": entry.metadata, "warnings": entry.warnings, "refusal": refusal,
            "message_object": None}


def result_json(fields: ResultFields) -> bytes:
    """What a Result of these fields publishes; NaN and infinities as null, as a model's."""
    return to_json(fields, inf_nan_mode="null")

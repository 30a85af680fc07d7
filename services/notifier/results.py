"""Pure result handling: classify one result line and build the task's final Result."""

from dataclasses import dataclass
from typing import Any

from pydantic_core import to_json

from batchbus.shared.models import (
    Attempt,
    CostFields,
    ErrorInfo,
    ManifestEntry,
    ResultFields,
    Status,
    Usage,
    UsageFields,
)
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


def classify(result: dict[str, Any], attempt: int, max_attempts: int) -> Final | Retry:
    """Decides a result line's fate; `result` is the line's `result` object."""
    kind = result.get("type")
    if kind == "succeeded":
        return Final("succeeded", message=result.get("message") or {})
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


def result_fields(entry: ManifestEntry, final: Final, batch_id: str,
                  prices: PriceTable) -> ResultFields:
    """The task's final Result as its fields, in the model's order: `result_json` makes of
    them the bytes `Result.model_dump_json` would, without validating what we built."""
    usage: UsageFields | None = None
    cost: CostFields | None = None
    if final.message is not None:
        tokens = TokenCounts.from_usage(final.message.get("usage") or {})
        usage, cost = usage_fields(tokens), prices.cost_fields(entry.model, tokens)
    return {"task_id": entry.task_id, "tenant": entry.tenant, "status": final.status,
            "message": final.message, "error": final.error, "usage": usage, "cost": cost,
            "batch_id": batch_id, "route": "batch", "attempts": entry.attempt,
            "metadata": entry.metadata, "warnings": [], "refusal": None}


def result_json(fields: ResultFields) -> bytes:
    """What a Result of these fields publishes; NaN and infinities as null, as a model's."""
    return to_json(fields, inf_nan_mode="null")

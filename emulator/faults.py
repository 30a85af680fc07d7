"""Scripted HTTP faults: which call gets one, and the error response it produces."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from starlette.responses import JSONResponse

from batchbus.emulator.config import FaultRule
from batchbus.emulator.errors import default_message, error_response, error_type_for


class FaultBook:
    """Counts how often each configured rule fired; replacing the list starts over."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._source: list[FaultRule] | None = None
        self._used: list[int] = []

    def take(self, rules: list[FaultRule], operation: str) -> FaultRule | None:
        """Spend one use of the first live rule matching `operation` (or `*`)."""
        with self._lock:
            if rules is not self._source:
                self._source, self._used = rules, []
            self._used.extend([0] * (len(rules) - len(self._used)))
            for index, rule in enumerate(rules):
                live = self._used[index] < rule.times
                if live and rule.operation in (operation, "*"):
                    self._used[index] += 1
                    return rule
        return None

    def remaining(self, rules: list[FaultRule]) -> list[int]:
        with self._lock:
            used = self._used if rules is self._source else []
            return [rule.times - (used[i] if i < len(used) else 0) for i, rule in enumerate(rules)]


def fault_response(rule: FaultRule, request_id: str) -> JSONResponse:
    """The error answer for a fired rule (callers skip rules whose status is None)."""
    if rule.spend_limit:
        return error_response(
            429,
            "rate_limit_error",
            _spend_limit_message(),
            request_id,
            details={"error_code": "enforced_spend_limit_reached"},
        )
    status = rule.status or 500
    error_type = error_type_for(status)
    message = default_message(error_type)
    return error_response(status, error_type, message, request_id, _headers(rule))


def _headers(rule: FaultRule) -> dict[str, str]:
    headers: dict[str, str] = {}
    if rule.retry_after is not None:
        headers["retry-after"] = _number(rule.retry_after)
    if rule.retry_after_ms is not None:
        headers["retry-after-ms"] = _number(rule.retry_after_ms)
    if rule.should_retry is not None:
        headers["x-should-retry"] = "true" if rule.should_retry else "false"
    return headers


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _spend_limit_message() -> str:
    today = datetime.now(UTC)
    year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
    return (
        "You have reached your API usage limits: your organization's monthly spend limit is "
        f"exhausted. You will regain access on {year:04d}-{month:02d}-01 at 00:00 UTC."
    )

"""Intake's budget gate: which tenants have a daily budget, the most a task can cost, and
whether it fits what is left of its day's (the ledger is shared/budgets.py)."""

import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from prometheus_client import Counter

from batchbus.shared import subjects
from batchbus.shared.budgets import Budgets, usd
from batchbus.shared.models import Reservation
from batchbus.shared.pricing import MTOK, PriceTable

# A token of Claude's tokenizer covers at least one byte of text, and the published task's
# bytes hold all the API sees of it (JSON escapes only add bytes): one token per byte bounds
# the input. The API adds a few hundred tokens of its own (the tool-use system prompt).
TOKENS_PER_BYTE = 1
API_OVERHEAD_TOKENS = 512
# Content named by URL or file id is not in the task's bytes: the API scales an image to at
# most about 1,600 tokens; a referenced document can fill a 200K context window.
IMAGE_TOKENS = 1_600
DOCUMENT_TOKENS = 200_000


def parse_budgets(text: str) -> dict[str, Decimal]:
    """Reads INTAKE_BUDGETS: a JSON object `{"acme": 5}` or `acme=5,beta=10.50` (USD a day).

    Raises ValueError with what is wrong, so a bad setting stops the service at start-up.
    """
    text = text.strip()
    if not text:
        return {}
    if text[0] in "{[":
        raw = json.loads(text, parse_float=Decimal)
        if not isinstance(raw, dict):
            raise ValueError("budgets must be a JSON object of tenant -> USD")
        pairs = [(str(k), str(v)) for k, v in raw.items()]
    else:
        pairs = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            tenant, sep, usd = item.partition("=")
            if not sep:
                raise ValueError(f"budget {item!r} is not tenant=USD")
            pairs.append((tenant.strip(), usd.strip()))
    budgets: dict[str, Decimal] = {}
    for tenant, usd in pairs:
        if not subjects.is_token(tenant):
            raise ValueError(f"budget tenant {tenant!r} does not match {subjects.TOKEN_PATTERN}")
        try:
            amount = Decimal(usd)
        except InvalidOperation:
            raise ValueError(f"budget of {tenant} is not a number: {usd!r}") from None
        if not amount.is_finite() or amount < 0:
            raise ValueError(f"budget of {tenant} must be a finite amount >= 0, got {usd}")
        budgets[tenant] = amount
    return budgets


def worst_case_usd(params: dict[str, Any], task_bytes: int, prices: PriceTable,
                   realtime: bool) -> Decimal | None:
    """The most a task can cost: input bounded by its size, output by `max_tokens`.

    `task_bytes` is the size of the whole published task. None when the model has no price.
    Input is priced at the dearest input rate a prompt with `cache_control` could be billed at
    (a 1-hour cache write); batch prices apply unless the task goes real-time.
    """
    referenced, caches = _scan(params)
    input_tokens = task_bytes * TOKENS_PER_BYTE + API_OVERHEAD_TOKENS + referenced
    rates = prices.rates(str(params.get("model")), input_tokens,
                         params.get("inference_geo") == "us")
    if rates is None:
        return None
    input_rate = max(rates["input"], rates["cache_write_5m"], rates["cache_write_1h"]) \
        if caches else rates["input"]
    usd = (input_tokens * input_rate + int(params["max_tokens"]) * rates["output"]) / MTOK
    return usd if realtime else usd * prices.batch_discount


def _scan(params: dict[str, Any]) -> tuple[int, bool]:
    """Tokens of content named by URL or file id, and whether any block asks for caching."""
    referenced, caches = 0, False
    stack: list[Any] = [params]
    while stack:  # iterative: a deeply nested task must not hit the recursion limit
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            caches = caches or "cache_control" in value
            source = value.get("source")
            if isinstance(source, dict) and source.get("type") in ("url", "file"):
                referenced += IMAGE_TOKENS if value.get("type") == "image" else DOCUMENT_TOKENS
            stack.extend(value.values())
    return referenced, caches


@dataclass(frozen=True)
class Refusal:
    """Why a task does not fit its tenant's budget; `message` carries the figures."""

    reason: str  # "over_budget" or "unpriced_model", a metric label and the error type
    message: str


class BudgetGate:
    """Intake's side: which tenants have a budget, and whether a task fits its day's."""

    def __init__(self, budgets: Budgets, limits: dict[str, Decimal], prices: PriceTable,
                 outcomes: Counter | None = None) -> None:
        self.budgets = budgets
        self.limits = limits
        self.prices = prices
        self.outcomes = outcomes  # batchbus_budget_reservations_total{outcome}

    async def admit(self, tenant: str, task_id: str, params: dict[str, Any], task_bytes: int,
                    day: date, realtime: bool, redelivered: bool,
                    fallback_model: str | None = None) -> Reservation | Refusal | None:
        """The task's reservation, a refusal, or None for a tenant without a budget. A task
        with a fallback model may be paid twice: refused (billed), then sent on in a batch."""
        budget = self.limits.get(tenant)
        if budget is None:
            return None
        worst = worst_case_usd(params, task_bytes, self.prices, realtime)
        if fallback_model is not None and worst is not None:
            again = worst_case_usd(params | {"model": fallback_model}, task_bytes, self.prices,
                                   realtime=False)
            worst = None if again is None else worst + again
        if worst is None:
            self._count("refused")
            models = " and ".join(repr(m) for m in (str(params.get("model")), fallback_model)
                                  if m and self.prices.rates(m) is None)
            return Refusal("unpriced_model", f"tenant {tenant} has a daily budget, and model "
                           f"{models} has no price, so this task's cost cannot be bounded")
        held = await self.budgets.reserve(tenant, task_id, day, worst, budget, redelivered)
        if held.reservation is None:
            self._count("refused")
            return Refusal("over_budget", f"over the daily budget of tenant {tenant}: "
                           f"{usd(held.total)} of {usd(budget)} for {day.isoformat()} (UTC) is "
                           f"already reserved or spent, and this task may cost up to "
                           f"{usd(worst)}")
        if held.new:
            self._count("reserved")
        return held.reservation

    def _count(self, outcome: str) -> None:
        if self.outcomes is not None:
            self.outcomes.labels(outcome).inc()

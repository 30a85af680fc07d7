"""Sums over final results: counts by status, and per model what batching cost, what the
same calls would have cost at real-time prices, and what was saved (exact Decimal sums)."""

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from batchbus.shared.models import Result

UNKNOWN_MODEL = "(unknown model)"


def usd(value: float) -> Decimal:
    # The JSON holds the shortest decimal form of each float; summing those is exact.
    return Decimal(str(value))


@dataclass
class ModelCost:
    results: int = 0
    priced: int = 0  # results with a cost (a model missing from the price table has none)
    input_tokens: int = 0
    output_tokens: int = 0
    batch_usd: Decimal = Decimal(0)
    realtime_usd: Decimal = Decimal(0)
    saved_usd: Decimal = Decimal(0)

    def add(self, result: Result) -> None:
        self.results += 1
        if result.usage is not None:
            self.input_tokens += result.usage.input_tokens
            self.output_tokens += result.usage.output_tokens
        if result.cost is not None:
            self.priced += 1
            self.batch_usd += usd(result.cost.batch_usd)
            self.realtime_usd += usd(result.cost.realtime_usd)
            self.saved_usd += usd(result.cost.saved_usd)

    def merge(self, other: "ModelCost") -> None:
        self.results += other.results
        self.priced += other.priced
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.batch_usd += other.batch_usd
        self.realtime_usd += other.realtime_usd
        self.saved_usd += other.saved_usd

    @property
    def saved_share(self) -> Decimal | None:
        return self.saved_usd / self.realtime_usd if self.realtime_usd else None

    def as_json(self) -> dict[str, Any]:
        """Money as strings, so a reader gets the exact sums rather than floats."""
        return {"results": self.results, "priced_results": self.priced,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "batch_usd": str(self.batch_usd), "realtime_usd": str(self.realtime_usd),
                "saved_usd": str(self.saved_usd)}


def model_of(result: Result) -> str:
    model = (result.message or {}).get("model")
    return model if isinstance(model, str) and model else UNKNOWN_MODEL


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)  # results that ran, by route
    # Only results that ran (they have usage or a cost); rejections cost nothing.
    models: dict[str, ModelCost] = field(default_factory=dict)
    not_succeeded: list[Result] = field(default_factory=list)

    def add(self, result: Result) -> None:
        self.statuses[result.status] += 1
        if result.route is not None:
            self.routes[result.route] += 1
        if result.status != "succeeded":
            self.not_succeeded.append(result)
        if result.usage is not None or result.cost is not None:
            self.models.setdefault(model_of(result), ModelCost()).add(result)

    @property
    def count(self) -> int:
        return sum(self.statuses.values())

    @property
    def total(self) -> ModelCost:
        total = ModelCost()
        for cost in self.models.values():
            total.merge(cost)
        return total

    @property
    def unpriced(self) -> int:
        return sum(c.results - c.priced for c in self.models.values())

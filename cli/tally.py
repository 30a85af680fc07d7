"""Sums over final results: counts by status, and per model what batching cost, what the
same calls would have cost at real-time prices, and what was saved (exact Decimal sums)."""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from batchbus.shared.models import Result

UNKNOWN_MODEL = "(unknown model)"
# `--json` money: decimal strings with this many places, rounded half to even. A token of the
# cheapest rate costs about 1e-8 USD at batch prices, so 10 places keep every sum to the
# cent-millionth; the tables print 6.
USD_PLACES = 10
_QUANTUM = Decimal(1).scaleb(-USD_PLACES)


def usd(value: float) -> Decimal:
    # The JSON holds the shortest decimal form of each float; summing those is exact.
    return Decimal(str(value))


def usd_text(value: Decimal) -> str:
    """A sum as `--json` prints it: `0.0123450000`, never `1.2345E-8` or `1.0`."""
    return f"{value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN):f}"


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
        """Money as decimal strings with USD_PLACES places, so a reader gets the sums
        rather than floats, all in one format."""
        return {"results": self.results, "priced_results": self.priced,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "batch_usd": usd_text(self.batch_usd),
                "realtime_usd": usd_text(self.realtime_usd),
                "saved_usd": usd_text(self.saved_usd)}


def model_of(result: Result) -> str:
    model = (result.message or {}).get("model")
    return model if isinstance(model, str) and model else UNKNOWN_MODEL


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)  # results that ran, by route
    # Only results that ran (they have usage or a cost); rejections cost nothing.
    models: dict[str, ModelCost] = field(default_factory=dict)
    # The others, by status: they cost nothing (a rejection, an error before the model ran).
    not_ran: Counter[str] = field(default_factory=Counter)
    not_succeeded: list[Result] = field(default_factory=list)

    def add(self, result: Result) -> None:
        self.statuses[result.status] += 1
        if result.route is not None:
            self.routes[result.route] += 1
        if result.status != "succeeded":
            self.not_succeeded.append(result)
        if result.usage is not None or result.cost is not None:
            self.models.setdefault(model_of(result), ModelCost()).add(result)
        else:
            self.not_ran[result.status] += 1

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
    def ran(self) -> int:
        """Results that ran (counted per model); with `not_ran`, every result added."""
        return sum(c.results for c in self.models.values())

    @property
    def unpriced(self) -> int:
        return sum(c.results - c.priced for c in self.models.values())


@dataclass
class Finals:
    """A replay's results, one final result per task: `kept` in the order stored, and the
    ones they `superseded` (a rejection of a copy sent again later)."""

    kept: list[Result] = field(default_factory=list)
    superseded: list[Result] = field(default_factory=list)
    # Positions in the replay of the superseded ones, for a listing of every result.
    superseded_at: set[int] = field(default_factory=set)


def finals(results: Iterable[Result]) -> Finals:
    """The final result of each task (per tenant and task id): the latest one that is not a
    rejection, else the latest rejection. A rejected task sent again has a second final
    result; a copy sent after a task succeeded (a stale duplicate) is rejected but does not
    undo its success."""
    best: dict[tuple[str, str], tuple[int, Result]] = {}
    superseded: list[tuple[int, Result]] = []
    for index, result in enumerate(results):
        key = (result.tenant, result.task_id)
        previous = best.get(key)
        if previous is not None and result.status == "rejected" \
                and previous[1].status != "rejected":
            superseded.append((index, result))
            continue
        if previous is not None:
            superseded.append(previous)
        best[key] = (index, result)
    superseded.sort(key=lambda pair: pair[0])
    return Finals(kept=[r for _, r in sorted(best.values(), key=lambda pair: pair[0])],
                  superseded=[r for _, r in superseded],
                  superseded_at={i for i, _ in superseded})

"""What the notifier counts: results, tokens, money, retries, dead letters, mismatches."""

import logging
from collections import Counter as Tally
from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client import Counter
from pydantic import TypeAdapter

from batchbus.services.notifier.metrics import NotifierMetrics
from batchbus.shared.budgets import SettleOutcome
from batchbus.shared.models import (
    Cost,
    CostFields,
    ManifestEntry,
    RefusalFields,
    Result,
    ResultFields,
    UsageFields,
)
from batchbus.shared.pricing import PriceTable

log = logging.getLogger("batchbus.notifier")

# The `tokens` counter's kinds, in the order `_Spend` sums a result's usage fields.
TOKEN_KINDS = ("input", "output", "cache_write", "cache_read")
NO_CATEGORY = "none"  # the `refusals` label of a refusal the API gave no category
# A newly stored final result (its Result's fields), its model, when its task was published,
# and what its earlier attempts cost (counted already, when they were billed).
Stored = tuple[ResultFields, str, datetime, Cost | None]
# A real-time Result as the fields `_count` reads (its ErrorInfo back to a model); one a call.
_AS_FIELDS = TypeAdapter(ResultFields)


def refusal_label(refusal: RefusalFields) -> str:
    return refusal["category"] or NO_CATEGORY


class _Spend:
    """Tokens and money of many billed attempts, summed so that each counter is increased
    once: one `inc` per token kind and model, and money counter, instead of eight per
    result (each takes a lock)."""

    def __init__(self) -> None:
        self.tokens: dict[str, list[int]] = {}  # model -> the TOKEN_KINDS' sums
        self.unpriced: dict[str, list[str]] = {}  # model -> task ids
        self.batch = self.realtime = self.saved = 0.0
        self.priced = False

    def add(self, task_id: str, model: str, usage: UsageFields, cost: CostFields | None,
            prior: Cost | None = None) -> None:
        """One attempt's spend; `cost` holds `prior` too (a final result's), taken off here."""
        sums = self.tokens.get(model)
        if sums is None:
            sums = self.tokens[model] = [0, 0, 0, 0]
        sums[0] += usage["input_tokens"]
        sums[1] += usage["output_tokens"]
        sums[2] += usage["cache_creation_input_tokens"]
        sums[3] += usage["cache_read_input_tokens"]
        if cost is None:
            self.unpriced.setdefault(model, []).append(task_id)
            return
        self.priced = True
        self.batch += cost["batch_usd"]
        self.realtime += cost["realtime_usd"]
        self.saved += cost["saved_usd"]
        if prior is not None:
            self.batch -= prior.batch_usd
            self.realtime -= prior.realtime_usd
            self.saved -= prior.saved_usd


class Accounting:
    def __init__(self, metrics: NotifierMetrics, prices: PriceTable) -> None:
        self.metrics = metrics
        self.prices = prices
        # Labelled counters, looked up once: `labels()` takes a lock and builds a key a call.
        self._status_counters: dict[str, Counter] = {}
        self._token_counters: dict[tuple[str, str], Counter] = {}

    def results(self, stored: Iterable[tuple[ResultFields, ManifestEntry]]) -> None:
        """Counts the batch results a window stored anew, each as its Result's fields."""
        self._count((fields, entry.model, entry.published_at, entry.prior_cost)
                    for fields, entry in stored)

    def final(self, result: Result, model: str, published_at: datetime,
              prior: Cost | None = None) -> None:
        """Counts a stored final result of either route (a real-time one's cost.batch_usd is
        its full price, so `cost_batch` stays what was spent)."""
        self._count([(_AS_FIELDS.validate_python(result.model_dump()), model, published_at,
                      prior)])

    def refused(self, task_id: str, model: str, usage: UsageFields, cost: CostFields | None,
                refusal: RefusalFields) -> None:
        """A refused answer whose task goes on to its fallback model: a refusal and a retry,
        and money spent now (it was billed). The final result carries this cost in its
        `prior_cost` and does not count it again."""
        self.metrics.refusals.labels(refusal_label(refusal)).inc()
        self.retry("refusal")
        spend = _Spend()
        spend.add(task_id, model, usage, cost)
        self._spent(spend)

    def _count(self, stored: Iterable[Stored]) -> None:
        """Sums over the results first (see _Spend); the latency histogram still sees every
        result."""
        now = datetime.now(UTC)
        observe = self.metrics.task_latency.observe
        statuses: Tally[str] = Tally()
        refusals: Tally[str] = Tally()
        spend = _Spend()
        for fields, model, published_at, prior in stored:
            statuses[fields["status"]] += 1
            observe(max(0.0, (now - published_at).total_seconds()))
            if (refusal := fields["refusal"]) is not None:
                refusals[refusal_label(refusal)] += 1
            usage = fields["usage"]
            if usage is not None:  # no reply: this attempt spent nothing (its prior is counted)
                spend.add(fields["task_id"], model, usage, fields["cost"], prior)
        for status, count in statuses.items():
            self._status(status).inc(count)
        for category, count in refusals.items():
            self.metrics.refusals.labels(category).inc(count)
        self._spent(spend)

    def _spent(self, spend: _Spend) -> None:
        for model, sums in spend.tokens.items():
            for kind, value in zip(TOKEN_KINDS, sums, strict=True):
                self._tokens(kind, model).inc(value)
        for model, task_ids in spend.unpriced.items():
            self.metrics.unknown_models.inc(len(task_ids))
            log.warning("no price for model %s; cost of %d result(s) not counted (%s%s)", model,
                        len(task_ids), ", ".join(task_ids[:3]), ", ..." if len(task_ids) > 3 else "")
        if spend.priced:
            self.metrics.cost_batch.inc(spend.batch)
            self.metrics.cost_realtime.inc(spend.realtime)
            self.metrics.cost_saved.inc(spend.saved)

    def _status(self, status: str) -> Counter:
        child = self._status_counters.get(status)
        if child is None:
            child = self._status_counters[status] = self.metrics.results.labels(status)
        return child

    def _tokens(self, kind: str, model: str) -> Counter:
        child = self._token_counters.get((kind, model))
        if child is None:
            child = self._token_counters[(kind, model)] = self.metrics.tokens.labels(kind, model)
        return child

    def realtime_call(self, outcome: str) -> None:
        self.metrics.realtime_calls.labels(outcome).inc()

    def retry(self, reason: str) -> None:
        self.metrics.retries.labels(reason).inc()

    def dead_letter(self) -> None:
        self.metrics.dead_letters.inc()

    def settlement(self, outcome: SettleOutcome | None) -> None:
        """A budget reservation settled by a final result (None: the task had none)."""
        if outcome is not None:
            self.metrics.budget_settlements.labels(outcome).inc()

    def mismatch(self, batch_id: str, custom_id: str) -> None:
        # Not ours (an adopted batch that was not this intent's?): alert, never guess.
        self.metrics.result_mismatches.inc()
        log.error("batch %s returned unknown custom_id %s", batch_id, custom_id)

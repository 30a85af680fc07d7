"""What the notifier counts: results, tokens, money, retries, dead letters, mismatches."""

import logging
from collections import Counter as Tally
from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client import Counter
from pydantic import TypeAdapter

from batchbus.services.notifier.metrics import NotifierMetrics
from batchbus.shared.budgets import SettleOutcome
from batchbus.shared.models import ManifestEntry, Result, ResultFields
from batchbus.shared.pricing import PriceTable

log = logging.getLogger("batchbus.notifier")

# The `tokens` counter's kinds, in the order `_count` sums a result's usage fields.
TOKEN_KINDS = ("input", "output", "cache_write", "cache_read")
# A newly stored final result (its Result's fields), its model and when its task was published.
Stored = tuple[ResultFields, str, datetime]
# A real-time Result as the fields `_count` reads (its ErrorInfo back to a model); one a call.
_AS_FIELDS = TypeAdapter(ResultFields)


class Accounting:
    def __init__(self, metrics: NotifierMetrics, prices: PriceTable) -> None:
        self.metrics = metrics
        self.prices = prices
        # Labelled counters, looked up once: `labels()` takes a lock and builds a key a call.
        self._status_counters: dict[str, Counter] = {}
        self._token_counters: dict[tuple[str, str], Counter] = {}

    def results(self, stored: Iterable[tuple[ResultFields, ManifestEntry]]) -> None:
        """Counts the batch results a window stored anew, each as its Result's fields."""
        self._count((fields, entry.model, entry.published_at) for fields, entry in stored)

    def final(self, result: Result, model: str, published_at: datetime) -> None:
        """Counts a stored final result of either route (a real-time one's cost.batch_usd is
        its full price, so `cost_batch` stays what was spent)."""
        self._count([(_AS_FIELDS.validate_python(result.model_dump()), model, published_at)])

    def _count(self, stored: Iterable[Stored]) -> None:
        """Sums tokens and money over the results first: one `inc` per status, token kind
        and model, and money counter, instead of eight per result (each takes a lock). The
        latency histogram still sees every result."""
        now = datetime.now(UTC)
        observe = self.metrics.task_latency.observe
        statuses: Tally[str] = Tally()
        tokens: dict[str, list[int]] = {}  # model -> the TOKEN_KINDS' sums
        unpriced: dict[str, list[str]] = {}  # model -> task ids
        batch = realtime = saved = 0.0
        priced = False
        for fields, model, published_at in stored:
            statuses[fields["status"]] += 1
            observe(max(0.0, (now - published_at).total_seconds()))
            usage = fields["usage"]
            if usage is None:
                continue
            sums = tokens.get(model)
            if sums is None:
                sums = tokens[model] = [0, 0, 0, 0]
            sums[0] += usage["input_tokens"]
            sums[1] += usage["output_tokens"]
            sums[2] += usage["cache_creation_input_tokens"]
            sums[3] += usage["cache_read_input_tokens"]
            cost = fields["cost"]
            if cost is None:
                unpriced.setdefault(model, []).append(fields["task_id"])
                continue
            priced = True
            batch += cost["batch_usd"]
            realtime += cost["realtime_usd"]
            saved += cost["saved_usd"]
        for status, count in statuses.items():
            self._status(status).inc(count)
        for model, sums in tokens.items():
            for kind, value in zip(TOKEN_KINDS, sums, strict=True):
                self._tokens(kind, model).inc(value)
        for model, task_ids in unpriced.items():
            self.metrics.unknown_models.inc(len(task_ids))
            log.warning("no price for model %s; cost of %d result(s) not counted (%s%s)", model,
                        len(task_ids), ", ".join(task_ids[:3]), ", ..." if len(task_ids) > 3 else "")
        if priced:
            self.metrics.cost_batch.inc(batch)
            self.metrics.cost_realtime.inc(realtime)
            self.metrics.cost_saved.inc(saved)

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

"""What the notifier counts: results, tokens, money, retries, dead letters, mismatches."""

import logging
from datetime import UTC, datetime

from prometheus_client import Counter

from shared.metrics import Metrics
from shared.models import ManifestEntry, Result
from shared.pricing import PriceTable

log = logging.getLogger("batchbus.notifier")


class Accounting:
    def __init__(self, metrics: Metrics, prices: PriceTable) -> None:
        self.metrics = metrics
        self.prices = prices
        self._token_counters: dict[tuple[str, str], Counter] = {}

    def result(self, result: Result, entry: ManifestEntry) -> None:
        self.final(result, entry.model, entry.published_at)

    def final(self, result: Result, model: str, published_at: datetime) -> None:
        """Counts a stored final result of either route (a real-time one's cost.batch_usd is
        its full price, so `cost_batch` stays what was spent)."""
        self.metrics.results.labels(result.status).inc()
        self.metrics.task_latency.observe(
            max(0.0, (datetime.now(UTC) - published_at).total_seconds()))
        usage = result.usage
        if usage is None:
            return
        for kind, value in (("input", usage.input_tokens), ("output", usage.output_tokens),
                            ("cache_write", usage.cache_creation_input_tokens),
                            ("cache_read", usage.cache_read_input_tokens)):
            self._tokens(kind, model).inc(value)
        if result.cost is None:
            self.metrics.unknown_models.inc()
            log.warning("no price for model %s; cost of %s not counted", model,
                        result.task_id)
            return
        self.metrics.cost_batch.inc(result.cost.batch_usd)
        self.metrics.cost_realtime.inc(result.cost.realtime_usd)
        self.metrics.cost_saved.inc(result.cost.saved_usd)

    def _tokens(self, kind: str, model: str) -> Counter:
        """The labelled counter, looked up once per (kind, model): `labels()` takes a lock
        and builds a key each call, four times per result."""
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

    def mismatch(self, batch_id: str, custom_id: str) -> None:
        # Not ours (an adopted batch that was not this intent's?): alert, never guess.
        self.metrics.result_mismatches.inc()
        log.error("batch %s returned unknown custom_id %s", batch_id, custom_id)

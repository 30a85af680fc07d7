"""What the notifier counts: results, tokens, money, retries, dead letters, mismatches."""

import logging
from datetime import UTC, datetime

from services.notifier.results import latency_seconds
from shared.metrics import Metrics
from shared.models import ManifestEntry, Result
from shared.pricing import PriceTable

log = logging.getLogger("batchbus.notifier")


class Accounting:
    def __init__(self, metrics: Metrics, prices: PriceTable) -> None:
        self.metrics = metrics
        self.prices = prices

    def result(self, result: Result, entry: ManifestEntry) -> None:
        self.metrics.results.labels(result.status).inc()
        self.metrics.task_latency.observe(latency_seconds(entry, datetime.now(UTC)))
        usage = result.usage
        if usage is None:
            return
        for kind, value in (("input", usage.input_tokens), ("output", usage.output_tokens),
                            ("cache_write", usage.cache_creation_input_tokens),
                            ("cache_read", usage.cache_read_input_tokens)):
            self.metrics.tokens.labels(kind, entry.model).inc(value)
        if result.cost is None:
            self.metrics.unknown_models.inc()
            log.warning("no price for model %s; cost of %s not counted", entry.model,
                        result.task_id)
            return
        self.metrics.cost_batch.inc(result.cost.batch_usd)
        self.metrics.cost_realtime.inc(result.cost.realtime_usd)
        self.metrics.cost_saved.inc(result.cost.saved_usd)

    def retry(self, reason: str) -> None:
        self.metrics.retries.labels(reason).inc()

    def dead_letter(self) -> None:
        self.metrics.dead_letters.inc()

    def mismatch(self, batch_id: str, custom_id: str) -> None:
        # Not ours (an adopted batch that was not this intent's?): alert, never guess.
        self.metrics.result_mismatches.inc()
        log.error("batch %s returned unknown custom_id %s", batch_id, custom_id)

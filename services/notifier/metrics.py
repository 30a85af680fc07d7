"""The notifier's own Prometheus series."""

from prometheus_client import CollectorRegistry

from batchbus.shared.metrics import SECONDS_BUCKETS, ServiceMetrics

# delivered: 2xx; retried: failed, tried again later; failed: given up and recorded.
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed")


class NotifierMetrics(ServiceMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.results = self.results_counter()
        self.realtime_calls = self.counter("realtime_calls_total",
                                           "Real-time Messages API calls, by outcome", ["outcome"])
        self.retries = self.counter("retries_total", "Task attempts sent back for another batch",
                                    ["reason"])
        # No labels, so the series exists at 0 and the first dead letter shows in increase().
        self.dead_letters = self.counter("dead_letters_total",
                                         "Task attempts given up on as dead letters")
        # The API's categories are few; a refusal it names none of is "none".
        self.refusals = self.counter("refusals_total",
                                     "Refused answers (stop_reason refusal), by category",
                                     ["category"])
        self.tokens = self.counter("tokens_total", "Tokens used, by kind and model",
                                   ["kind", "model"])
        self.cost_batch = self.counter("cost_batch_usd_total",
                                       "Spent, USD: batch prices, full price for real-time results")
        self.cost_realtime = self.counter("cost_realtime_usd_total",
                                          "Would have spent at real-time prices")
        self.cost_saved = self.counter("cost_saved_usd_total", "Saved by batching, USD")
        self.result_mismatches = self.counter(
            "result_mismatches_total", "Result lines whose custom_id is not in the batch's manifest")
        self.unknown_models = self.counter("unknown_model_results_total",
                                           "Results whose model has no price")
        self.webhook_deliveries = self.counter("webhook_deliveries_total",
                                               "Webhook POST attempts and give-ups, by outcome",
                                               ["outcome"], known=WEBHOOK_OUTCOMES)
        self.budget_settlements = self.counter("budget_settlements_total",
                                               "Reservations settled by a final result, by outcome",
                                               ["outcome"])
        # Claim checks: answers stored, params read for real-time calls and fallbacks, deleted.
        self.payload_bytes = self.payload_bytes_counter()
        self.task_latency = self.histogram("task_latency_seconds", "Task published -> final result",
                                           SECONDS_BUCKETS)

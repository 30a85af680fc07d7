"""batchbus's own Prometheus metrics (`batchbus_*`), one registry per service process.

Labels stay low-cardinality: never a task id, batch id or tenant.
"""

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from batchbus.shared.models import BatchState

SIZE_BUCKETS = (1, 10, 100, 1_000, 10_000, 100_000)
BYTES_BUCKETS = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 2.56e8)
# delivered: 2xx; retried: failed, tried again later; failed: given up and recorded.
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed")
SECONDS_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    """Every batchbus_* series; a service touches only the ones it owns."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        c, g, h = _factory(registry)
        self.loop_restarts = c("loop_restarts_total", "Service loops restarted after an error",
                               ["loop"])
        self.tasks_received = c("tasks_received_total", "Tasks read from batchbus.tasks.>")
        self.tasks_accepted = c("tasks_accepted_total", "Tasks that passed validation")
        self.tasks_rejected = c("tasks_rejected_total", "Tasks rejected, by reason", ["reason"])
        self.cancels = c("cancels_total", "Cancel requests, by outcome", ["outcome"])
        self.tasks_deduplicated = c("tasks_deduplicated_total", "Repeated (tenant, task_id)")
        self.route_decisions = c("route_decisions_total", "Accepted tasks by route and reason",
                                 ["route", "reason"])
        self.batch_path_estimate = g("batch_path_estimate_seconds",
                                     "Intake's estimate of task to batch result, deadlines "
                                     "closer than this go real-time")
        self.realtime_calls = c("realtime_calls_total", "Real-time Messages API calls, by outcome",
                                ["outcome"])
        self.results = c("results_total", "Final results published, by status", ["status"])
        self.pending_tasks = g("pending_tasks", "Task attempts waiting in the batcher")
        self.oldest_pending_age = g("oldest_pending_age_seconds", "Age of the oldest pending task")
        self.batch_requests = h("batch_requests", "Requests per submitted batch", SIZE_BUCKETS)
        self.batch_bytes = h("batch_bytes", "Body bytes per submitted batch", BYTES_BUCKETS)
        self.flushes = c("batch_flushes_total", "Batch flushes, by reason", ["reason"])
        self.batches_submitted = c("batches_submitted_total", "Batches the API accepted")
        self.create_outcomes = c("batch_create_outcomes_total",
                                 "Create calls by outcome", ["outcome"])
        self.batches_in_flight = g("batches_in_flight", "Batches tracked by the poller")
        self.batch_records = g("batch_records", "Batch records in KV, by write-ahead state",
                               ["state"])
        for state in get_args(BatchState):  # a bounded set: show zeros, not "no data"
            self.batch_records.labels(state)
        self.oldest_batch_age = g("oldest_batch_age_seconds",
                                  "Age of the oldest batch in flight, since its create")
        self.batch_duration = h("batch_completion_seconds", "Create to ended", SECONDS_BUCKETS)
        self.polls = c("poll_calls_total", "Batch retrieve calls made by the poller")
        self.api_errors = c("api_errors_total", "Anthropic API errors",
                            ["operation", "status_code"])
        self.retries = c("retries_total", "Task attempts sent back for another batch", ["reason"])
        # No labels, so the series exists at 0 and the first dead letter shows in increase().
        self.dead_letters = c("dead_letters_total", "Task attempts given up on as dead letters")
        self.tokens = c("tokens_total", "Tokens used, by kind and model", ["kind", "model"])
        self.cost_batch = c("cost_batch_usd_total",
                            "Spent, USD: batch prices, full price for real-time results")
        self.cost_realtime = c("cost_realtime_usd_total", "Would have spent at real-time prices")
        self.cost_saved = c("cost_saved_usd_total", "Saved by batching, USD")
        self.result_mismatches = c("result_mismatches_total",
                                   "Result lines whose custom_id is not in the batch's manifest")
        self.unknown_models = c("unknown_model_results_total", "Results whose model has no price")
        self.webhook_deliveries = c("webhook_deliveries_total",
                                    "Webhook POST attempts and give-ups, by outcome", ["outcome"])
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome)
        self.budget_reservations = c("budget_reservations_total",
                                     "Budgeted tasks at intake, by outcome", ["outcome"])
        self.budget_settlements = c("budget_settlements_total",
                                    "Reservations settled by a final result, by outcome",
                                    ["outcome"])
        self.task_latency = h("task_latency_seconds", "Task published -> final result",
                              SECONDS_BUCKETS)


def _factory(registry: CollectorRegistry):  # type: ignore[no-untyped-def]
    def counter(name: str, doc: str, labels: list[str] | None = None) -> Counter:
        return Counter(f"batchbus_{name.removesuffix('_total')}", doc, labels or [],
                       registry=registry)

    def gauge(name: str, doc: str, labels: list[str] | None = None) -> Gauge:
        return Gauge(f"batchbus_{name}", doc, labels or [], registry=registry)

    def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(f"batchbus_{name}", doc, buckets=buckets, registry=registry)

    return counter, gauge, histogram

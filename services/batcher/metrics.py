"""The batcher's own Prometheus series."""

from prometheus_client import CollectorRegistry

from batchbus.shared.metrics import BYTES_BUCKETS, SIZE_BUCKETS, ServiceMetrics


class BatcherMetrics(ServiceMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.pending_tasks = self.gauge("pending_tasks", "Task attempts waiting in the batcher")
        self.payload_bytes = self.payload_bytes_counter()  # stored params streamed to creates
        self.oldest_pending_age = self.gauge("oldest_pending_age_seconds",
                                             "Age of the oldest pending task")
        self.batch_requests = self.histogram("batch_requests", "Requests per submitted batch",
                                             SIZE_BUCKETS)
        self.batch_bytes = self.histogram("batch_bytes", "Body bytes per submitted batch",
                                          BYTES_BUCKETS)
        self.flushes = self.counter("batch_flushes_total", "Batch flushes, by reason", ["reason"])
        self.batches_submitted = self.counter("batches_submitted_total", "Batches the API accepted")
        self.create_outcomes = self.counter("batch_create_outcomes_total",
                                            "Create calls by outcome", ["outcome"])
        self.api_errors = self.api_errors_counter()
        self.results = self.results_counter()

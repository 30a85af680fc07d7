"""The poller's own Prometheus series."""

from typing import get_args

from prometheus_client import CollectorRegistry

from batchbus.shared.metrics import SECONDS_BUCKETS, ServiceMetrics
from batchbus.shared.models import BatchState


class PollerMetrics(ServiceMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.batches_in_flight = self.gauge("batches_in_flight", "Batches tracked by the poller")
        self.batch_records = self.gauge("batch_records", "Batch records in KV, by write-ahead state",
                                        ["state"])
        for state in get_args(BatchState):  # a bounded set: show zeros, not "no data"
            self.batch_records.labels(state)
        self.oldest_batch_age = self.gauge("oldest_batch_age_seconds",
                                           "Age of the oldest batch in flight, since its create")
        self.batch_duration = self.histogram("batch_completion_seconds", "Create to ended",
                                             SECONDS_BUCKETS)
        self.polls = self.counter("poll_calls_total", "Calls to the Batches API by the poller, "
                                  "by endpoint (list pages, single retrieves)", ["endpoint"])
        self.sweeps = self.counter("poll_sweeps_total", "Looks at every batch in flight")
        self.sweep_interval = self.gauge("poll_sweep_interval_seconds",
                                         "Seconds until the next sweep, as last planned")
        self.end_noticed_after = self.histogram(
            "batch_end_noticed_seconds", "From a batch's ended_at to the poller seeing it",
            (1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 300))
        self.api_errors = self.api_errors_counter()

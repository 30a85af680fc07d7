"""Intake's own Prometheus series."""

from prometheus_client import CollectorRegistry

from batchbus.shared.metrics import ServiceMetrics


class IntakeMetrics(ServiceMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.tasks_received = self.counter("tasks_received_total", "Tasks read from batchbus.tasks.>")
        self.payload_bytes = self.payload_bytes_counter()  # stored params read to check them
        self.tasks_accepted = self.counter("tasks_accepted_total", "Tasks that passed validation")
        self.tasks_rejected = self.counter("tasks_rejected_total", "Tasks rejected, by reason",
                                           ["reason"])
        self.tasks_deduplicated = self.counter("tasks_deduplicated_total",
                                               "Repeated (tenant, task_id)")
        self.cancels = self.counter("cancels_total", "Cancel requests, by outcome", ["outcome"])
        self.route_decisions = self.counter("route_decisions_total",
                                            "Accepted tasks by route and reason", ["route", "reason"])
        self.batch_path_estimate = self.gauge(
            "batch_path_estimate_seconds",
            "Intake's estimate of task to batch result, deadlines closer than this go real-time")
        self.budget_reservations = self.counter("budget_reservations_total",
                                                "Budgeted tasks at intake, by outcome", ["outcome"])
        self.tasks_warned = self.counter("tasks_warned_total",
                                         "Accepted tasks with a warning (a deprecated model)")
        self.models_refreshes = self.counter("models_refreshes_total",
                                             "Reads of the Models API, by outcome", ["outcome"])
        self.catalog_models = self.gauge("catalog_models",
                                         "Models of the catalog by lifecycle", ["lifecycle"])
        self.catalog_unpriced = self.gauge("catalog_unpriced_models",
                                           "Models of the catalog without a price")
        self.results = self.results_counter()

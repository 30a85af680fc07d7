"""What every service's Prometheus metrics have in common: one registry per process, the
`batchbus_` prefix, and the loop-restart counter. Each service declares the series it owns
in services/<name>/metrics.py, so its /metrics shows only those (and the process series).

Labels stay low-cardinality: never a task id, batch id or tenant.
"""

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.gc_collector import GCCollector

SIZE_BUCKETS = (1, 10, 100, 1_000, 10_000, 100_000)
BYTES_BUCKETS = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 2.56e8)
SECONDS_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class ServiceMetrics:
    """A service's registry, with the series every service has: the process's (CPU, memory,
    open files), the runtime's (Python version, GC) and the loop restarts."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.loop_restarts = self.counter("loop_restarts_total",
                                          "Service loops restarted after an error", ["loop"])

    def counter(self, name: str, doc: str, labels: Iterable[str] = (),
                known: Iterable[str] = ()) -> Counter:
        """`batchbus_<name>`; each value in `known` of its one label shows at 0 from the start
        (a bounded set: zeros, not "no data", and the first event shows in increase())."""
        counter = Counter(f"batchbus_{name.removesuffix('_total')}", doc, list(labels),
                          registry=self.registry)
        for value in known:
            counter.labels(value)
        return counter

    def gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
        return Gauge(f"batchbus_{name}", doc, list(labels), registry=self.registry)

    def histogram(self, name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(f"batchbus_{name}", doc, buckets=buckets, registry=self.registry)

    def results_counter(self) -> Counter:
        """Final results a service publishes (intake: rejected; batcher: canceled;
        notifier: the rest), by status."""
        return self.counter("results_total", "Final results published, by status", ["status"])

    def payload_bytes_counter(self) -> Counter:
        """Bytes of claim-checked payloads (shared/payloads.py) this service stored, read
        back and deleted."""
        return self.counter("payload_bytes_total", "Bytes of payloads in the tenants' payload "
                            "buckets, by operation", ["operation"],
                            known=("stored", "read", "deleted"))

    def api_errors_counter(self) -> Counter:
        return self.counter("api_errors_total", "Anthropic API errors",
                            ["operation", "status_code"])

"""The catalog as the Models API says it is now: read at start and every refresh interval.

The data file was true when written; the API retires models and adds new ones every few
months. A model retired since is caught here, and one the API lists but the file lacks is
reported (accepted, its cost unknown). Without an answer the last known catalog stays.
"""

import asyncio
import logging
from collections import Counter
from typing import Literal

import anthropic
from anthropic import AsyncAnthropic

from batchbus.services.intake.metrics import IntakeMetrics
from batchbus.shared.catalog import Catalog

log = logging.getLogger("batchbus.intake")

FIRST_READ_SECONDS = 5.0
RETRY_SECONDS = 60.0  # after a failed read
# The list hides retired models unless asked: they must be known to be told apart.
LIFECYCLES: list[Literal["active", "deprecated", "retired"]] = ["active", "deprecated", "retired"]


class LiveCatalog:
    def __init__(self, file: Catalog, client: AsyncAnthropic | None, metrics: IntakeMetrics,
                 every: float) -> None:
        self.file = file
        self.current = file
        self.client = client
        self.metrics = metrics
        self.every = every
        self.fresh = False  # the last read answered
        self._observe()

    async def refresh(self) -> bool:
        """One read of the Models API (every page, every lifecycle); False if it failed."""
        if self.client is None:
            return False
        try:
            listed = [m async for m in self.client.models.list(lifecycle=LIFECYCLES, limit=1000)]
        except anthropic.APIError as exc:
            self.fresh = False
            self.metrics.models_refreshes.labels("failed").inc()
            log.warning("Models API unreachable (%s); checking models against the catalog as "
                        "last known (checked %s)", type(exc).__name__, self.current.checked)
            return False
        fresh = self.file.with_models_api(listed)
        self._report(fresh)
        self.current, self.fresh = fresh, True
        self.metrics.models_refreshes.labels("ok").inc()
        self._observe()
        return True

    async def first(self) -> None:
        """The read at start, bounded: intake serves with the data file meanwhile."""
        try:
            await asyncio.wait_for(self.refresh(), FIRST_READ_SECONDS)
        except TimeoutError:
            log.warning("Models API did not answer within %.0fs at start; checking models "
                        "against the catalog file until it does", FIRST_READ_SECONDS)

    async def follow(self) -> None:
        """The service loop: a read every `every` seconds, sooner after a failed one."""
        while True:
            await asyncio.sleep(self.every if self.fresh else min(self.every, RETRY_SECONDS))
            await self.refresh()

    def _report(self, fresh: Catalog) -> None:
        before = self.current
        for name in sorted(fresh.api_only - before.api_only):
            log.warning("the Models API lists %s, which the catalog lacks: tasks for it are "
                        "accepted with an unknown cost; add it to shared/data/models.json", name)
        for name, spec in sorted(fresh.models.items()):
            old = before.models.get(name)
            if old is not None and old.lifecycle != spec.lifecycle:
                log.warning("model %s is now %s (was %s)", name, spec.lifecycle, old.lifecycle)

    def _observe(self) -> None:
        counts = Counter(spec.lifecycle for spec in self.current.models.values())
        for lifecycle in ("active", "legacy", "deprecated", "retired", "unlisted"):
            self.metrics.catalog_models.labels(lifecycle).set(counts[lifecycle])
        self.metrics.catalog_unpriced.set(
            sum(1 for s in self.current.models.values() if s.rates is None))

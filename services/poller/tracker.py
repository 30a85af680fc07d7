"""The poller's loop: sweep the batches in flight with the list endpoint; announce progress
and each end.

The list answers up to 100 batches a call, newest first, with their status and counts, so a
sweep costs a call per 100 batches rather than a call per batch. It reads pages until every
batch in flight was seen or the pages are older than the oldest of them; a batch the list did
not show (created a moment ago, or past the page cap) is retrieved on its own.
"""

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import Literal, TypeVar, get_args

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types.messages import MessageBatch
from nats.js import JetStreamContext

from batchbus.services.poller.lease import Lease
from batchbus.services.poller.metrics import PollerMetrics
from batchbus.services.poller.polling import Cadence
from batchbus.services.poller.settings import PollerSettings
from batchbus.shared import subjects
from batchbus.shared.anthropic_client import REQUEST_COUNTS, request_counts, retry_after
from batchbus.shared.models import BatchEnded, BatchEvent, BatchRecord, BatchState
from batchbus.shared.publishing import publish, publish_event
from batchbus.shared.records import BatchRecords

log = logging.getLogger("batchbus.poller")
T = TypeVar("T")

@dataclass(frozen=True)
class View:
    """What a tick needs of the live records, worked out once each time they change: a tick
    while nothing changed costs the same with five batches in flight or five hundred."""

    tracked: dict[str, BatchRecord]  # submitted: the batches to sweep
    states: Counter[str]
    oldest_created: datetime | None
    overdue_at: datetime | None  # when the first tracked batch is past its expiry's grace

    @classmethod
    def of(cls, live: list[BatchRecord], grace: timedelta) -> "View":
        tracked = {r.batch_id: r for r in live if r.state == "submitted" and r.batch_id}
        created = [r.created_at for r in tracked.values() if r.created_at]
        expiries = [r.expires_at + grace for r in tracked.values() if r.expires_at]
        return cls(tracked, Counter(r.state for r in live), min(created, default=None),
                   min(expiries, default=None))


PAGE = 100  # the list endpoint's largest page
MAX_PAGES = 10  # per sweep; batches past them are retrieved one by one
MAX_RETRIEVES = 20  # per sweep, the oldest-looked-at first
CLOCK_SKEW = timedelta(seconds=5)  # between our records' created_at and the list's order


class Tracker:
    def __init__(self, js: JetStreamContext, client: AsyncAnthropic, records: BatchRecords,
                 lease: Lease, settings: PollerSettings, metrics: PollerMetrics) -> None:
        self.js = js
        self.client = client
        self.records = records
        self.lease = lease
        self.cadence = Cadence(settings.interval_seconds, settings.max_interval_seconds,
                               settings.max_calls_per_minute)
        self.grace = timedelta(seconds=settings.expiry_grace_seconds)
        self.metrics = metrics
        self.counts: dict[str, dict[str, int]] = {}
        self.seen: dict[str, float] = {}  # batch id -> when a sweep last saw it (monotonic)
        self.calls = 0  # API calls of the current sweep
        self.rng = random.Random()
        self.tick = min(1.0, max(0.05, settings.interval_seconds / 2))
        self.view = View({}, Counter(), None, None)
        self.version: int | None = None  # of the records `view` was made of

    async def run(self) -> None:
        try:
            while True:
                if await self.lease.hold():  # only one replica polls; the others stand by
                    await self.step()
                await asyncio.sleep(self.tick)  # the schedule's cadence, not a wait for a condition
        finally:
            await self.lease.release()

    async def step(self) -> None:
        # The KV bucket is the source of truth, so a new or restarted poller resumes every batch.
        live = await self.records.all()
        if self.version is None or self.records.version != self.version:
            self.version = self.records.version
            self.view = View.of(live, self.grace)
            if self.view.tracked.keys() - self.seen.keys():  # new batches: look soon
                self.cadence.soon(monotonic())
            self.seen = {k: v for k, v in self.seen.items() if k in self.view.tracked}
        tracked = self.view.tracked
        self._observe(self.view)
        if tracked and self.cadence.due(monotonic()):
            await self.sweep(tracked)
        overdue = self.view.overdue_at
        if overdue is not None and datetime.now(UTC) >= overdue:
            for record in list(tracked.values()):
                await self._give_up_if_overdue(record)

    async def sweep(self, tracked: dict[str, BatchRecord]) -> None:
        """One look at every batch in flight."""
        self.metrics.sweeps.inc()
        unseen = dict(tracked)
        self.calls, ended = 0, 0
        try:
            ended = await self._list(unseen)
            for batch_id in sorted(unseen, key=lambda b: self.seen.get(b, 0.0))[:MAX_RETRIEVES]:
                batch = await self._call("retrieve", self.client.messages.batches.retrieve(batch_id))
                ended += await self.observe(unseen.pop(batch_id), batch)
        except anthropic.APIError as exc:
            wait = retry_after(exc) if isinstance(exc, anthropic.APIStatusError) else None
            log.warning("sweep of %d batches failed (%s); backing off", len(tracked),
                        getattr(exc, "status_code", "connection"))
            # The calls made before the failure count against the budget too.
            self.cadence.failed(monotonic(), self.calls, wait, self.rng)
            return
        changed = ended > 0 or any(b not in self.seen for b in tracked)
        now = monotonic()
        for batch_id in tracked.keys() - unseen.keys():
            self.seen[batch_id] = now
        self.cadence.swept(now, self.calls, changed, self.rng)
        self.metrics.sweep_interval.set(self.cadence.interval)

    async def _list(self, unseen: dict[str, BatchRecord]) -> int:
        """Pages of the list until every batch of `unseen` was seen or the pages are older
        than the oldest of them; takes the seen ones out of `unseen`. The batches ended."""
        created = [r.created_at for r in unseen.values() if r.created_at is not None]
        oldest = min(created) - CLOCK_SKEW if len(created) == len(unseen) else None
        pages, ended = 0, 0
        page = None
        while unseen and pages < MAX_PAGES:
            page = await self._call("list", self.client.messages.batches.list(limit=PAGE)
                                    if page is None else page.get_next_page())
            pages += 1
            for batch in page.data:
                if (record := unseen.pop(batch.id, None)) is not None:
                    ended += await self.observe(record, batch)
            if not page.data or not page.has_next_page() \
                    or (oldest is not None and page.data[-1].created_at < oldest):
                break
        return ended

    async def _call(self, endpoint: str, call: Awaitable[T]) -> T:
        """One API call of a sweep, counted (by the sweep, for its budget, and as a metric)."""
        self.calls += 1
        self.metrics.polls.labels(endpoint).inc()
        try:
            return await call
        except anthropic.APIError as exc:
            status = str(getattr(exc, "status_code", "connection"))
            self.metrics.api_errors.labels(endpoint, status).inc()
            raise

    async def observe(self, record: BatchRecord, batch: MessageBatch) -> int:
        """Acts on what the API says of one batch; 1 if it has ended."""
        if batch.processing_status == "ended":
            await self.ended(record, batch)
            return 1
        if self.counts.get(batch.id) != (counts := request_counts(batch)):
            self.counts[batch.id] = counts
            await publish_event(self.js, _event(batch, "progress"), record.tenants,
                                _digest(counts))
        return 0

    async def ended(self, record: BatchRecord, batch: MessageBatch) -> None:
        await self._hand_off(record, available=True)
        await publish_event(self.js, _event(batch, "ended"), record.tenants)
        if batch.ended_at is not None:
            self.metrics.batch_duration.observe((batch.ended_at - batch.created_at).total_seconds())
            self.metrics.end_noticed_after.observe(
                max(0.0, (datetime.now(UTC) - batch.ended_at).total_seconds()))
        self.counts.pop(batch.id, None)
        log.info("batch %s ended: %s", batch.id, request_counts(batch))

    def _observe(self, view: View) -> None:
        self.metrics.batches_in_flight.set(len(view.tracked))
        for state in get_args(BatchState):
            self.metrics.batch_records.labels(state).set(view.states[state])
        oldest = view.oldest_created
        self.metrics.oldest_batch_age.set(
            (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0)

    async def _give_up_if_overdue(self, record: BatchRecord) -> None:
        """A batch the API has not ended long past its expiry is not tracked for ever."""
        if record.expires_at is None or datetime.now(UTC) < record.expires_at + self.grace:
            return
        log.error("batch %s is past its expiry and still not ended; its requests count as "
                  "expired", record.batch_id)
        await self._hand_off(record, available=False)

    async def _hand_off(self, record: BatchRecord, available: bool) -> None:
        # Announce first, then record: a crash in between only repeats a deduplicated announce.
        assert record.batch_id is not None
        handoff = BatchEnded(intent_id=record.intent_id, batch_id=record.batch_id,
                             results_available=available)
        await publish(self.js, subjects.BATCH_ENDED, handoff, subjects.STREAM_INTERNAL,
                      f"{record.intent_id}:ended")
        await self.records.transition(record.intent_id, lambda r: r.model_copy(
            update={"state": "ended", "ended_at": datetime.now(UTC)})
            if r.state == "submitted" else None)


def _event(batch: MessageBatch, kind: Literal["progress", "ended"]) -> BatchEvent:
    return BatchEvent(batch_id=batch.id, event=kind, processing_status=batch.processing_status,
                      request_counts=request_counts(batch), created_at=batch.created_at,
                      ended_at=batch.ended_at)


def _digest(counts: dict[str, int]) -> str:
    return "-".join(str(counts[k]) for k in REQUEST_COUNTS)

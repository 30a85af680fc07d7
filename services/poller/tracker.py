"""The poller's loop: retrieve each submitted batch when due; announce progress and the end."""

import asyncio
import logging
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import Literal, get_args

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types.messages import MessageBatch
from nats.js import JetStreamContext

from batchbus.services.poller.lease import Lease
from batchbus.services.poller.metrics import PollerMetrics
from batchbus.services.poller.polling import Completions, PollPolicy, Schedule
from batchbus.services.poller.settings import PollerSettings
from batchbus.shared import subjects
from batchbus.shared.anthropic_client import REQUEST_COUNTS, request_counts
from batchbus.shared.models import BatchEnded, BatchEvent, BatchRecord, BatchState
from batchbus.shared.publishing import publish, publish_event
from batchbus.shared.records import BatchRecords

log = logging.getLogger("batchbus.poller")



class Tracker:
    def __init__(self, js: JetStreamContext, client: AsyncAnthropic, records: BatchRecords,
                 lease: Lease, settings: PollerSettings, metrics: PollerMetrics) -> None:
        self.js = js
        self.client = client
        self.records = records
        self.lease = lease
        self.policy = PollPolicy(settings.interval_seconds, settings.max_interval_seconds)
        self.grace = timedelta(seconds=settings.expiry_grace_seconds)
        self.metrics = metrics
        self.schedule = Schedule()
        self.completions = Completions()
        self.counts: dict[str, dict[str, int]] = {}
        self.rng = random.Random()
        self.tick = min(1.0, max(0.05, settings.interval_seconds / 2))

    async def run(self) -> None:
        try:
            while True:
                if await self.lease.hold():  # only one replica polls; the others stand by
                    await self.poll_due()
                await asyncio.sleep(self.tick)  # the schedule's cadence, not a wait for a condition
        finally:
            await self.lease.release()

    async def poll_due(self) -> None:
        # The KV bucket is the source of truth, so a new or restarted poller resumes every batch.
        live = await self.records.all()
        tracked = [r for r in live if r.state == "submitted"]
        self._observe(live, tracked)
        self.schedule.keep_only({r.intent_id for r in tracked})
        for record in tracked:
            if self.schedule.is_due(record.intent_id, monotonic()):
                await self.poll(record)

    async def poll(self, record: BatchRecord) -> None:
        assert record.batch_id is not None
        previous = self.schedule.delays.get(record.intent_id)
        self.metrics.polls.inc()
        try:
            batch = await self.client.messages.batches.retrieve(record.batch_id)
        except anthropic.APIError as exc:
            # Never a reason to give up on a batch (a fresh batch can 404 for a moment).
            status = str(getattr(exc, "status_code", "connection"))
            self.metrics.api_errors.labels("retrieve", status).inc()
            log.warning("poll of %s failed (%s); backing off", record.batch_id, status)
            self.schedule.plan(record.intent_id, monotonic(),
                              self.policy.after_error(previous, self.rng))
            await self._give_up_if_overdue(record)
            return
        if batch.processing_status == "ended":
            await self.ended(record, batch)
            return
        if self.counts.get(batch.id) != (counts := request_counts(batch)):
            self.counts[batch.id] = counts
            await publish_event(self.js, _event(batch, "progress"), record.tenants,
                                _digest(counts))
        age = (datetime.now(UTC) - batch.created_at).total_seconds()
        self.schedule.plan(record.intent_id, monotonic(), self.policy.next_delay(
            age, previous, self.completions.expected(), self.rng))
        await self._give_up_if_overdue(record)

    async def ended(self, record: BatchRecord, batch: MessageBatch) -> None:
        await self._hand_off(record, available=True)
        await publish_event(self.js, _event(batch, "ended"), record.tenants)
        if batch.ended_at is not None:
            took = (batch.ended_at - batch.created_at).total_seconds()
            self.completions.add(took)
            self.metrics.batch_duration.observe(took)
        self.counts.pop(batch.id, None)
        log.info("batch %s ended: %s", batch.id, request_counts(batch))

    def _observe(self, live: list[BatchRecord], tracked: list[BatchRecord]) -> None:
        self.metrics.batches_in_flight.set(len(tracked))
        states = Counter(r.state for r in live)
        for state in get_args(BatchState):
            self.metrics.batch_records.labels(state).set(states[state])
        now = datetime.now(UTC)
        ages = [(now - r.created_at).total_seconds() for r in tracked if r.created_at]
        self.metrics.oldest_batch_age.set(max(ages, default=0.0))

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

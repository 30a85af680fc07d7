"""The poller's loop: retrieve each submitted batch when due; announce progress and the end."""

import asyncio
import logging
from time import monotonic
from typing import Literal

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types.messages import MessageBatch
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from services.poller.polling import PollPolicy, Schedule
from shared import kv as records
from shared import subjects
from shared.metrics import Metrics
from shared.models import BatchEnded, BatchEvent, BatchRecord
from shared.publishing import publish_event

log = logging.getLogger("batchbus.poller")


class Tracker:
    def __init__(self, js: JetStreamContext, client: AsyncAnthropic, batches: KeyValue,
                 policy: PollPolicy, metrics: Metrics) -> None:
        self.js = js
        self.client = client
        self.batches = batches
        self.schedule = Schedule.empty(policy)
        self.metrics = metrics
        self.counts: dict[str, dict[str, int]] = {}
        self.tick = min(1.0, max(0.05, policy.interval / 2))

    async def run(self) -> None:
        while True:
            await self.poll_due()
            await asyncio.sleep(self.tick)  # the cadence of the schedule, not a wait for a condition

    async def poll_due(self) -> None:
        # The KV bucket is the source of truth, so a restarted poller resumes every batch.
        tracked = [r for r in await records.all_records(self.batches) if r.state == "submitted"]
        self.metrics.batches_in_flight.set(len(tracked))
        self.schedule.keep_only({r.intent_id for r in tracked})
        for record in tracked:
            if self.schedule.is_due(record.intent_id, monotonic()):
                await self.poll(record)

    async def poll(self, record: BatchRecord) -> None:
        assert record.batch_id is not None
        self.schedule.polled(record.intent_id, monotonic())
        self.metrics.polls.inc()
        try:
            batch = await self.client.messages.batches.retrieve(record.batch_id)
        except anthropic.APIStatusError as exc:
            # Never a reason to give up on a batch (a fresh batch can 404 for a moment).
            self.metrics.api_errors.labels("retrieve", str(exc.status_code)).inc()
            log.warning("poll of %s failed: %s", record.batch_id, exc.status_code)
            return
        except anthropic.APIError as exc:
            self.metrics.api_errors.labels("retrieve", "connection").inc()
            log.warning("poll of %s failed: %s", record.batch_id, exc)
            return
        if batch.processing_status == "ended":
            await self.ended(record, batch)
        elif self.counts.get(batch.id) != (counts := _counts(batch)):
            self.counts[batch.id] = counts
            await publish_event(self.js, _event(batch, "progress"), _digest(counts))

    async def ended(self, record: BatchRecord, batch: MessageBatch) -> None:
        # Announce first, then record: a crash in between only repeats a deduplicated announce.
        handoff = BatchEnded(intent_id=record.intent_id, batch_id=batch.id)
        await self.js.publish(subjects.BATCH_ENDED, handoff.model_dump_json().encode(),
                              stream=subjects.STREAM_INTERNAL,
                              headers={subjects.MSG_ID: f"{record.intent_id}:ended"})
        await publish_event(self.js, _event(batch, "ended"))
        await records.transition(self.batches, record.intent_id, lambda r: r.model_copy(
            update={"state": "ended", "ended_at": batch.ended_at}) if r.state == "submitted"
            else None)
        if batch.ended_at is not None:
            self.metrics.batch_duration.observe((batch.ended_at - batch.created_at).total_seconds())
        self.schedule.forget(record.intent_id)
        self.counts.pop(batch.id, None)
        log.info("batch %s ended: %s", batch.id, _counts(batch))


def _counts(batch: MessageBatch) -> dict[str, int]:
    c = batch.request_counts
    return {"processing": c.processing, "succeeded": c.succeeded, "errored": c.errored,
            "canceled": c.canceled, "expired": c.expired}


def _event(batch: MessageBatch, kind: Literal["progress", "ended"]) -> BatchEvent:
    return BatchEvent(batch_id=batch.id, event=kind, processing_status=batch.processing_status,
                      request_counts=_counts(batch), created_at=batch.created_at,
                      ended_at=batch.ended_at)


def _digest(counts: dict[str, int]) -> str:
    return "-".join(str(counts.get(k, 0)) for k in
                    ("processing", "succeeded", "errored", "canceled", "expired"))

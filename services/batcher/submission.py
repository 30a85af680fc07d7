"""Write-ahead submission of one batch: intent -> create -> record -> ack.

The create call is the one place batchbus spends money and the API has no idempotency
key, so the SDK never retries it; an unknown outcome is resolved by listing batches.
"""

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types.messages import MessageBatch
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from shared import kv as records
from shared.metrics import Metrics
from shared.models import AcceptedTask, BatchRecord, ManifestEntry

log = logging.getLogger("batchbus.batcher")

# How far apart our clock and the API's may be when matching a batch by creation time.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Pending:
    """One task attempt held (unacknowledged) by the batcher until its batch is recorded."""

    msg: Msg
    task: AcceptedTask
    custom_id: str
    size: int

    @property
    def seq(self) -> int:
        return int(self.msg.metadata.sequence.stream)

    def request(self) -> dict[str, Any]:
        return {"custom_id": self.custom_id, "params": self.task.params}

    def manifest_entry(self) -> ManifestEntry:
        t = self.task
        return ManifestEntry(custom_id=self.custom_id, tenant=t.tenant, task_id=t.task_id,
                             attempt=t.attempt, model=str(t.params.get("model", "")),
                             metadata=t.metadata, published_at=t.published_at,
                             accepted_seq=self.seq)


class CreateRefused(Exception):
    """The API did not create the batch; try again after `delay` seconds."""

    def __init__(self, delay: float | None) -> None:
        super().__init__(f"create refused; retry after {delay}")
        self.delay = delay


class Submitter:
    def __init__(self, client: AsyncAnthropic, batches: KeyValue, manifests: ObjectStore,
                 metrics: Metrics, settle_seconds: float) -> None:
        self.client = client  # built with max_retries=0
        self.batches = batches
        self.manifests = manifests
        self.metrics = metrics
        self.settle_seconds = settle_seconds

    async def submit(self, items: list[Pending], size: int) -> BatchRecord:
        """Submits `items` as one batch and returns its record; raises CreateRefused."""
        intent = BatchRecord(intent_id=uuid.uuid4().hex, state="intent", requests=len(items),
                             bytes=size, intent_at=datetime.now(UTC))
        await records.put_manifest(self.manifests, intent.intent_id,
                                   (i.manifest_entry() for i in items))
        await self.batches.create(intent.intent_id, intent.model_dump_json().encode())
        batch = await self._create(intent, [i.request() for i in items])
        record = await self.record(intent, batch)
        self.metrics.batches_submitted.inc()
        self.metrics.batch_requests.observe(len(items))
        self.metrics.batch_bytes.observe(size)
        return record

    async def _create(self, intent: BatchRecord, requests: list[dict[str, Any]]) -> MessageBatch:
        try:
            batch = await self.client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
            self.metrics.create_outcomes.labels("created").inc()
            log.info("created batch %s for intent %s (%d requests)",
                     batch.id, intent.intent_id, intent.requests)
            return batch
        except anthropic.APIStatusError as exc:
            self.metrics.api_errors.labels("create", str(exc.status_code)).inc()
            if exc.status_code < 500:  # the API answered: nothing was created
                await self.forget(intent)
                self.metrics.create_outcomes.labels("refused").inc()
                log.warning("create refused (%s %s); tasks wait", exc.status_code, exc.type)
                raise CreateRefused(_retry_after(exc)) from exc
            cause: Exception = exc
        except anthropic.APIError as exc:  # connection reset, timeout: outcome unknown
            self.metrics.api_errors.labels("create", "connection").inc()
            cause = exc
        log.warning("create outcome unknown for intent %s: %s", intent.intent_id, cause)
        adopted = await self.resolve(intent)
        if adopted is None:
            await self.forget(intent)
            raise CreateRefused(None) from cause
        return adopted

    async def resolve(self, intent: BatchRecord) -> MessageBatch | None:
        """Finds the batch an unknown create may have made; never cancels to find out."""
        await asyncio.sleep(self.settle_seconds)  # let a new batch show up in the list
        owned = {r.batch_id for r in await records.all_records(self.batches) if r.batch_id}
        since = intent.intent_at - CLOCK_SKEW
        candidates = []
        async for batch in self.client.messages.batches.list(limit=100):
            if batch.created_at < since:
                break
            counts = batch.request_counts
            total = (counts.processing + counts.succeeded + counts.errored + counts.canceled
                     + counts.expired)
            if total == intent.requests and batch.id not in owned:
                candidates.append(batch)
        if len(candidates) == 1:
            self.metrics.create_outcomes.labels("adopted").inc()
            log.warning("adopted batch %s for intent %s", candidates[0].id, intent.intent_id)
            return candidates[0]
        if candidates:
            # Two unowned batches of the same size in the window: adopting either could
            # deliver the wrong tasks. Keep the intent for an operator (issue 3 goes further).
            self.metrics.create_outcomes.labels("ambiguous").inc()
            raise RuntimeError(f"intent {intent.intent_id}: {len(candidates)} candidate batches")
        self.metrics.create_outcomes.labels("not_created").inc()
        log.warning("intent %s: no batch was created; its tasks will be resubmitted",
                    intent.intent_id)
        return None

    async def record(self, intent: BatchRecord, batch: MessageBatch) -> BatchRecord:
        def submitted(r: BatchRecord) -> BatchRecord | None:
            if r.state != "intent":
                return None
            return r.model_copy(update={"state": "submitted", "batch_id": batch.id,
                                        "created_at": batch.created_at,
                                        "expires_at": batch.expires_at})
        stored = await records.transition(self.batches, intent.intent_id, submitted)
        if stored is None:
            raise RuntimeError(f"intent {intent.intent_id} vanished before it was recorded")
        return stored

    async def forget(self, intent: BatchRecord) -> None:
        await self.batches.delete(intent.intent_id)
        await records.delete_manifest(self.manifests, intent.intent_id)


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return float(value) if value else None
    except ValueError:
        return None

"""Write-ahead submission of one batch: intent -> create -> record (the acks follow).

The create call is the one place batchbus spends money and the API has no idempotency
key, so the SDK never retries it; an unknown outcome is resolved by listing batches.
"""

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import Any, Literal

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types.messages import MessageBatch
from nats.aio.msg import Msg
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from batchbus.services.batcher import failpoints
from batchbus.services.batcher.batching import (
    Betas,
    Request,
    Streamed,
    batch_body,
    custom_id,
    encode_request,
    prefix_key,
    request_head,
)
from batchbus.services.batcher.liveness import Liveness
from batchbus.services.batcher.metrics import BatcherMetrics
from batchbus.shared.anthropic_client import beta_headers, request_counts, retry_after
from batchbus.shared.models import AcceptedTask, BatchRecord, ManifestEntry
from batchbus.shared.payloads import PayloadMissing, Payloads
from batchbus.shared.records import BatchRecords

log = logging.getLogger("batchbus.batcher")

# How far apart our clock and the API's may be when matching a batch by creation time.
CLOCK_SKEW = timedelta(minutes=5)
CONNECTION_CHECK = 1.0  # seconds between looks at the NATS connection during a create


@dataclass(frozen=True, slots=True)
class Pending:
    """One task attempt held (unacknowledged) by the batcher until its batch is recorded.

    Held as bytes, encoded when the task is taken: its request as the create body carries
    it (its length is its size) and its manifest row, so a flush of 100,000 encodes nothing
    and a held task is not kept as objects twice (the parsed task is let go)."""

    msg: Msg
    seq: int  # stream sequence of the message
    tenant: str
    task_id: str
    published_at: datetime
    row: bytes  # its ManifestEntry as the manifest stores it
    request: Request  # Streamed when its params are stored in the payload bucket
    prefix: str  # requests that share it can share a prompt cache
    betas: Betas  # only requests with the same share a batch

    @classmethod
    def of(cls, msg: Msg, task: AcceptedTask, stored: Streamed | None = None) -> "Pending":
        """The held task; `stored` reads its params when its params_object names them.
        Raises ValueError for params that JSON cannot carry (NaN, Infinity)."""
        cid = custom_id(task.tenant, task.task_id, task.attempt)
        seq = msg.metadata.sequence.stream
        # The row straight from an AcceptedTask that is valid already: building an entry
        # for each of 100,000 tasks cost more than writing its row.
        row = ManifestEntry.row(cid, task.tenant, task.task_id, task.attempt,
                                str(task.params.get("model", "")), task.metadata,
                                task.published_at, seq, task.webhook, task.reservation,
                                task.warnings, task.fallback_model, task.prior_cost,
                                task.params_object)
        return cls(msg, seq, task.tenant, task.task_id, task.published_at, row,
                   stored or encode_request(cid, task.params), prefix_key(task.params),
                   tuple(task.betas))

    @property
    def size(self) -> int:
        return len(self.request) + 1  # and its comma in the body

    @property
    def streamed(self) -> bool:
        return isinstance(self.request, Streamed)

    def entry(self) -> ManifestEntry:
        return ManifestEntry.from_row(self.row)


class CreateRefused(Exception):
    """The API did not create the batch; its tasks may go again after `delay` seconds."""

    def __init__(self, delay: float | None) -> None:
        super().__init__(f"create refused; retry after {delay}")
        self.delay = delay


class CreateInDoubt(Exception):
    """Whether the batch exists is not known yet; its tasks must wait, never go again."""


class Withdrawn(Exception):
    """Nothing was created, and the tasks may be in another replica's hands by now (this one
    was paused too long): drop them unacknowledged and let NATS redeliver them."""


# The batch an unknown create made, or why there is none to adopt.
Resolution = MessageBatch | Literal["absent", "ambiguous"]


class Submitter:
    def __init__(self, client: AsyncAnthropic, records: BatchRecords, batch_ids: KeyValue,
                 metrics: BatcherMetrics, settle_seconds: float, create_timeout: float,
                 stale_after: float, payloads: Payloads, liveness: Liveness | None = None
                 ) -> None:
        self.client = client  # built with max_retries=0
        self.payloads = payloads
        self.liveness = liveness or Liveness(None, settle_seconds)
        self.records = records
        self.batch_ids = batch_ids
        self.metrics = metrics
        self.settle_seconds = settle_seconds
        self.create_timeout = create_timeout
        self.stale_after = stale_after  # when other replicas may settle our intent

    async def submit(self, items: list[Pending], size: int,
                     owned: Callable[[], bool] = lambda: True) -> BatchRecord:
        """Submits `items` as one batch and returns its stored record; `owned` says whether
        their messages are still ours.

        Raises CreateRefused (nothing was created), CreateInDoubt (keep the tasks held) or
        Withdrawn (nothing was created; drop the tasks).
        """
        started = monotonic()
        betas = items[0].betas if items else ()
        if any(i.betas != betas for i in items):  # the header would not be theirs
            raise ValueError("requests with different betas cannot share a batch")
        intent = BatchRecord(intent_id=uuid.uuid4().hex, state="intent", requests=len(items),
                             bytes=size, intent_at=datetime.now(UTC),
                             tenants=sorted({i.tenant for i in items}),
                             owner=self.liveness.run_id)
        revision = await self.records.create(intent, [i.row for i in items])
        failpoints.hit("batcher.after_intent")
        # Checked just before the POST, the last moment a pause can still be noticed: the
        # create must start while the tasks are ours, and soon enough to end before other
        # replicas may take the intent for stale and send its tasks again.
        if not owned() or monotonic() - started >= self.stale_after - self.create_timeout:
            await self.records.forget(intent, revision)
            self.metrics.create_outcomes.labels("withdrawn").inc()
            log.warning("intent %s withdrawn before its create: this batcher was paused",
                        intent.intent_id)
            raise Withdrawn(intent.intent_id)
        batch = await self._create(intent, revision, [i.request for i in items], betas)
        failpoints.hit("batcher.after_create")
        record = await self.record(intent, batch)
        failpoints.hit("batcher.after_record")
        self.metrics.batches_submitted.inc()
        self.metrics.batch_requests.observe(len(items))
        self.metrics.batch_bytes.observe(size)
        return record

    async def stored(self, task: AcceptedTask) -> Streamed | None:
        """The request of a task whose params are stored, read when sent; None for inline
        params. Raises PayloadMissing when they are gone."""
        if task.params_object is None:
            return None
        tenant = task.tenant
        info = await self.payloads.info(tenant, task.params_object, task.params_digest)
        head = request_head(custom_id(tenant, task.task_id, task.attempt))
        return Streamed(head, info.size or 0, lambda: self.payloads.chunks(tenant, info))

    async def _create(self, intent: BatchRecord, revision: int, requests: list[Request],
                      betas: Betas) -> MessageBatch:
        try:
            # messages.batches.create's endpoint, with the requests already encoded (the
            # client's default Content-Type is JSON) and sent piece by piece; the length
            # given, so it goes as one plain body, not chunked. Betas go as the SDK's beta
            # create sends them: the anthropic-beta header on the same endpoint. The batch is
            # the same resource either way (listed, retrieved and read as any other), so
            # resolving a create in doubt and polling need no betas.
            length, body = batch_body(requests)
            batch = await self._while_connected(intent, self.client.post(
                "/v1/messages/batches", cast_to=MessageBatch, content=body,
                options={"headers": {"Content-Length": str(length), **beta_headers(betas)}}))
            self.metrics.create_outcomes.labels("created").inc()
            log.info("created batch %s for intent %s (%d requests%s)", batch.id,
                     intent.intent_id, intent.requests,
                     f", betas {','.join(betas)}" if betas else "")
            return batch
        except PayloadMissing as exc:
            # Stored params went while the body was sent: it never ended, so nothing exists.
            log.error("create for intent %s not sent: %s", intent.intent_id, exc)
            await self.records.forget(intent, revision)
            raise CreateRefused(None) from exc
        except anthropic.APIStatusError as exc:
            self.metrics.api_errors.labels("create", str(exc.status_code)).inc()
            if exc.status_code < 500:  # the API answered: nothing was created
                self.metrics.create_outcomes.labels("refused").inc()
                log.warning("create refused (%s %s); tasks wait", exc.status_code, exc.type)
                await self.records.forget(intent, revision)
                raise CreateRefused(retry_after(exc)) from exc
            cause: Exception = exc
        except anthropic.APIError as exc:  # connection reset, timeout: outcome unknown
            self.metrics.api_errors.labels("create", "connection").inc()
            cause = exc
        log.warning("create outcome unknown for intent %s: %s", intent.intent_id, cause)
        await asyncio.sleep(self.settle_seconds)  # let a new batch show up in the list
        resolution = await self.resolve(intent)
        if isinstance(resolution, MessageBatch):
            return resolution
        if resolution == "absent" and await self.records.forget(intent, revision):
            raise CreateRefused(None) from cause
        raise CreateInDoubt(intent.intent_id) from cause

    async def _while_connected(self, intent: BatchRecord,
                               post: Coroutine[Any, Any, MessageBatch]) -> MessageBatch:
        """The create, stopped if this run loses NATS meanwhile: other replicas then see it
        gone (Liveness) and may settle its intent, which no create of ours may outlive."""
        call = asyncio.ensure_future(post)
        while not call.done():
            await asyncio.wait({call}, timeout=CONNECTION_CHECK)
            if not call.done() and not self.liveness.connected():
                call.cancel()
                log.error("lost NATS during the create of intent %s: stopped it; another "
                          "run settles the intent", intent.intent_id)
                raise CreateInDoubt(intent.intent_id)
        return call.result()

    async def resolve(self, intent: BatchRecord) -> Resolution:
        """Finds the batch an unknown create may have made; never cancels to find out.

        A candidate was created in the window the create could have run in, has the intent's
        request count, and belongs to no other record. `ambiguous` leaves the intent for a
        later look: other replicas' records shrink the candidates as they are written.
        """
        earliest = intent.intent_at - CLOCK_SKEW
        latest = intent.intent_at + timedelta(seconds=self.create_timeout) + CLOCK_SKEW
        candidates = []
        async for batch in self.client.messages.batches.list(limit=100):
            if batch.created_at < earliest:
                break
            if batch.created_at <= latest and _total(batch) == intent.requests \
                    and await self._owner(batch.id) in (None, intent.intent_id):
                candidates.append(batch)
        if len(candidates) == 1:
            self.metrics.create_outcomes.labels("adopted").inc()
            log.warning("adopted batch %s for intent %s", candidates[0].id, intent.intent_id)
            return candidates[0]
        if candidates:
            self.metrics.create_outcomes.labels("ambiguous").inc()
            log.error("intent %s: %d candidate batches; its tasks wait until one is owned",
                      intent.intent_id, len(candidates))
            return "ambiguous"
        self.metrics.create_outcomes.labels("resubmitted").inc()
        log.warning("intent %s: no batch was created; its tasks go again", intent.intent_id)
        return "absent"

    async def record(self, intent: BatchRecord, batch: MessageBatch) -> BatchRecord:
        def submitted(r: BatchRecord) -> BatchRecord | None:
            if r.state != "intent":
                return None
            return r.model_copy(update={"state": "submitted", "batch_id": batch.id,
                                        "created_at": batch.created_at,
                                        "expires_at": batch.expires_at})
        try:
            await self.batch_ids.create(batch.id, intent.intent_id.encode())
        except KeyWrongLastSequenceError:
            if await self._owner(batch.id) != intent.intent_id:
                raise CreateInDoubt(f"batch {batch.id} is owned by another intent") from None
        stored = await self.records.transition(intent.intent_id, submitted)
        if stored is None or stored.batch_id != batch.id:
            raise CreateInDoubt(f"intent {intent.intent_id} changed before it was recorded")
        return stored

    async def _owner(self, batch_id: str) -> str | None:
        try:
            entry = await self.batch_ids.get(batch_id)
        except NotFoundError:
            return None
        return entry.value.decode() if entry.value else None


def _total(batch: MessageBatch) -> int:
    return sum(request_counts(batch).values())

"""The batcher's loop: pull accepted task attempts, hold them, flush by count, bytes or time."""

import asyncio
import logging
from datetime import UTC, datetime
from time import monotonic

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from batchbus.services.batcher.batching import FlushPolicy, FlushReason, PendingBatch, distinct_count
from batchbus.services.batcher.metrics import BatcherMetrics
from batchbus.services.batcher.ownership import Ownership
from batchbus.services.batcher.recovery import Guard
from batchbus.services.batcher.settings import BatcherSettings
from batchbus.services.batcher.submission import CreateInDoubt, CreateRefused, Pending, Submitter, Withdrawn
from batchbus.shared import consumer, subjects
from batchbus.shared.anthropic_client import REQUEST_COUNTS
from batchbus.shared.cancels import Cancels
from batchbus.shared.models import AcceptedTask, BatchEvent, BatchRecord, ErrorInfo, ManifestEntry
from batchbus.shared.payloads import PayloadChanged, PayloadMissing
from batchbus.shared.publishing import has_result, publish_canceled, publish_event, publish_unsent
from batchbus.shared.runtime import kept_alive

log = logging.getLogger("batchbus.batcher")

IDLE_FETCH = 5.0  # seconds a fetch waits while no task is held


class Collector:
    def __init__(self, js: JetStreamContext, submitter: Submitter, cancels: Cancels,
                 settings: BatcherSettings, metrics: BatcherMetrics) -> None:
        self.js = js
        self.submitter = submitter
        self.cancels = cancels
        self.settings = settings
        self.metrics = metrics
        self.pending: PendingBatch[Pending] = PendingBatch(FlushPolicy(
            settings.max_requests, settings.max_bytes, settings.max_wait_seconds))
        self.held: set[int] = set()  # stream seqs in `pending`
        self.guard = Guard(submitter, settings.intent_stale_seconds)
        self.ownership = Ownership(settings.ack_wait_seconds)
        self.fetched_at = monotonic()  # no message of the current fetch came before it
        self.refusals = 0
        self.last_heartbeat = self.last_recovery = monotonic()

    @property
    def keep_alive_every(self) -> float:
        return self.settings.ack_wait_seconds / 4

    async def run(self) -> None:
        await self.submitter.liveness.serve()  # before any intent names this run
        await self.recover()
        while True:
            async with consumer.pull(
                    self.js, subjects.ACCEPTED_ALL, subjects.DURABLE_BATCHER,
                    subjects.STREAM_INTERNAL,
                    ConsumerConfig(ack_wait=self.settings.ack_wait_seconds, max_deliver=-1,
                                   max_ack_pending=self.settings.max_requests
                                   + 2 * self.settings.fetch_batch)) as psub:
                while await self.step(psub):
                    pass

    async def step(self, psub: JetStreamContext.PullSubscription) -> bool:
        """One round of fetch, flush, keep-alive; False when the subscription must be renewed."""
        now = monotonic()
        left = self.pending.time_left(now)
        # A fetch returns as soon as a message comes: waiting longer while nothing is held
        # only makes an idle batcher look up less often, and recovery still runs on time.
        recovery = self.last_recovery + self.settings.recovery_interval_seconds - now
        timeout = min(IDLE_FETCH, recovery) if left is None else min(1.0, left)
        timeout = max(0.01, timeout)
        self.fetched_at = monotonic()
        msgs = await consumer.fetch(psub, self.settings.fetch_batch, timeout)
        if not self.ownership.owned_since(self.fetched_at):
            # Stalled in the fetch (paused): what it got, and what waits in the subscription's
            # buffer, may have been redelivered elsewhere meanwhile. A new subscription starts
            # clean; NATS redelivers all of it.
            self._drop_pending()
            return False
        for msg in msgs:
            await self.take(msg)
        reason = self.pending.flush_reason(monotonic())
        if reason is not None:
            await self.flush(reason)
        await self.heartbeat()
        # Also as soon as a gone run's intents may be settled, once (not at every step).
        due = self.submitter.liveness.due_at()
        now = monotonic()
        if now - self.last_recovery >= self.settings.recovery_interval_seconds \
                or (due is not None and self.last_recovery < due <= now):
            await self.recover()
        self._observe()
        return True

    async def take(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if msg.metadata.num_delivered > 1:  # back after a crash or a lost ack: look first
            await self.guard.refresh()
        if seq in self.guard.skip:  # its batch exists already: never submit it twice
            await msg.ack()
            return
        if seq in self.guard.hold:  # its create is unresolved: wait for the answer
            await msg.nak(delay=self.settings.ack_wait_seconds)
            return
        if seq in self.held:
            return  # a redelivery of a message we still hold
        try:
            task = AcceptedTask.model_validate_json(msg.data)
        except ValidationError:
            log.error("unreadable internal message at seq %s; terminating it", seq)
            await msg.term()
            return
        if subjects.task_key(task.tenant, task.task_id) in self.cancels:
            await self._cancel(msg, task)
            return
        wait = (task.not_before - datetime.now(UTC)).total_seconds() if task.not_before else 0
        if wait > 0:  # a retry still in its back-off
            await msg.nak(delay=wait)
            return
        try:
            item = Pending.of(msg, task, await self.submitter.stored(task))
        except ValueError:  # NaN or Infinity: intake lets none through
            log.error("internal message at seq %s holds no JSON request; terminating it", seq)
            await msg.term()
            return
        except PayloadMissing as exc:
            await self._params_gone(msg, task, exc)
            return
        # A batch has one set of betas: a task of another set, or one too big to join, sends
        # the pending ones first. Each flush leaves fewer pending (a distinct count keeps
        # some back), so this ends, at the latest with none.
        while (reason := self.pending.flush_before(item.betas, item.size)) is not None:
            await self.flush(reason)
        if not self.pending.items:
            self.ownership.restart(self.fetched_at)
        self.pending.add(item, item.size, monotonic(), item.betas)
        self.held.add(seq)
        if self.pending.flush_reason(monotonic()) == "count":
            await self.flush("count")

    async def flush(self, reason: FlushReason) -> None:
        size = self.pending.bytes
        # Requests that share a prompt prefix side by side (see README, prompt caching).
        items = sorted(self.pending.take(), key=lambda i: i.prefix)
        self.held.clear()
        canceled = [i for i in items if subjects.task_key(i.tenant, i.task_id) in self.cancels]
        if canceled:  # canceled while waiting for this batch
            for item in canceled:
                await self._cancel(item.msg, item.entry())
                size -= item.size
            items = [i for i in items if i not in canceled]
            if not items:
                return
        items, size = await self._distinct_count(items, size)
        try:
            # Keeps the batch's messages from being redelivered while it is submitted; once
            # they are ours no more, the beat stops and the submitter withdraws before its create.
            async with kept_alive(lambda: self.ownership.keep(i.msg for i in items),
                                  self.keep_alive_every):
                record = await self.submitter.submit(items, size, self.ownership.owned)
        except Withdrawn:
            return  # NATS redelivers them; the guard keeps them out of a second batch
        except CreateRefused as refused:
            await self._back_off(items, refused.delay)
            return
        except CreateInDoubt:
            # The intent holds these tasks; a later recovery decides. Until then they wait.
            await self.guard.refresh(force=True)
            return
        self.refusals = 0
        self.guard.note_recorded(record.intent_id, frozenset(i.seq for i in items))
        self.metrics.flushes.labels(reason).inc()
        await self._announce(record)
        # Plain acks: a lost one brings its message back, and the guard acks it then. The
        # record is marked acked only when the consumer's ack floor has passed all its tasks
        # (Guard.release_acked), so it is never retired while a redelivery can still come.
        # One after the other: an ack only fills the client's buffer, and a task each
        # (gather) would cost more than the ack.
        for item in items:
            await item.msg.ack()

    async def _distinct_count(self, items: list[Pending], size: int) -> tuple[list[Pending], int]:
        """Gives the batch a request count no unresolved intent has, by keeping its last
        requests for the next batch; otherwise two creates in doubt could not be told apart
        (the list of batches shows counts, not contents) and their tasks would wait for ever."""
        await self.guard.refresh(force=True)
        while len(items) > distinct_count(len(items), self.guard.unresolved_counts):
            kept = items.pop()
            size -= kept.size
            self.pending.add(kept, kept.size, monotonic(), kept.betas)
            self.held.add(kept.seq)
        return items, size

    async def recover(self) -> None:
        """Settles intents left by dead runs and learns what is in flight elsewhere."""
        self.last_recovery = monotonic()
        for record in await self.guard.settle_stale():
            await self._announce(record)
        await self.guard.release_acked(await self._ack_floor())
        await self.guard.refresh(force=True)

    async def _ack_floor(self) -> int:
        """Stream seq up to which every task message has been acknowledged."""
        try:
            info = await self.js.consumer_info(subjects.STREAM_INTERNAL, subjects.DURABLE_BATCHER)
        except NotFoundError:  # first start: the consumer is created right after
            return 0
        return info.ack_floor.stream_seq if info.ack_floor else 0

    async def heartbeat(self) -> None:
        if monotonic() - self.last_heartbeat < self.keep_alive_every:
            return
        self.last_heartbeat = monotonic()
        if self.pending.items and not await self.ownership.keep(i.msg for i in self.pending.items):
            self._drop_pending()

    def _drop_pending(self) -> None:
        """Lets go of held tasks that may be in another replica's hands (this one was paused
        past the ack wait); unacknowledged, they come back, and the guard sorts them out."""
        dropped = self.pending.take()
        self.held.clear()
        log.warning("paused past the ack wait: let go of %d held tasks", len(dropped))

    async def _cancel(self, msg: Msg, task: AcceptedTask | ManifestEntry) -> None:
        if await publish_canceled(self.js, task.tenant, task.task_id, task.metadata,
                                  task.attempt - 1, webhook=task.webhook,
                                  reservation=task.reservation, warnings=task.warnings,
                                  prior_cost=task.prior_cost):
            self.metrics.results.labels("canceled").inc()
        await msg.ack()

    async def _params_gone(self, msg: Msg, task: AcceptedTask, why: PayloadMissing) -> None:
        """A task whose stored params are gone. They go once its final result is stored, so
        with a result this is a late redelivery; without one they outlived their retention
        waiting (NATS_PAYLOADS_MAX_AGE_SECONDS), and the task fails, saying so."""
        kind = "payload_changed" if isinstance(why, PayloadChanged) else "payload_missing"
        if not await has_result(self.js, task.tenant, task.task_id):
            log.error("task %s of %s cannot be sent: %s", task.task_id, task.tenant, why)
            if await publish_unsent(self.js, task.tenant, task.task_id, task.metadata,
                                    task.attempt - 1, ErrorInfo(type=kind, message=str(why)),
                                    webhook=task.webhook, reservation=task.reservation,
                                    warnings=task.warnings, prior_cost=task.prior_cost):
                self.metrics.results.labels("errored").inc()
        await msg.ack()

    async def _back_off(self, items: list[Pending], retry_after: float | None) -> None:
        """The API is busy: the tasks go back to the stream and wait; none is dropped."""
        self.refusals += 1
        delay = min(self.settings.retry_max_delay_seconds,
                    self.settings.retry_delay_seconds * 2 ** (self.refusals - 1))
        delay = max(delay, retry_after or 0.0)
        await asyncio.gather(*(item.msg.nak(delay=delay) for item in items))
        log.warning("create refused %d time(s); %d tasks retry in %.1fs",
                    self.refusals, len(items), delay)
        await asyncio.sleep(delay)

    async def _announce(self, record: BatchRecord) -> None:
        assert record.batch_id is not None
        await publish_event(self.js, BatchEvent(
            batch_id=record.batch_id, event="submitted", processing_status="in_progress",
            request_counts=dict.fromkeys(REQUEST_COUNTS, 0) | {"processing": record.requests},
            created_at=record.created_at), record.tenants)

    def _observe(self) -> None:
        self.metrics.pending_tasks.set(len(self.pending.items))
        oldest = self.pending.items[0].published_at if self.pending.items else None
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        self.metrics.oldest_pending_age.set(age)  # since the user published the task


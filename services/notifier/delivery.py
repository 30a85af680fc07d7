"""Delivers one ended batch: every result line becomes a final Result or a retry. An answer
too large for one message is stored apart, and a task's stored params are deleted once its
final result is stored (claims.py)."""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from anthropic import AsyncAnthropic
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError

from batchbus.services.notifier.accounting import Accounting
from batchbus.services.notifier.claims import ClaimChecks
from batchbus.services.notifier.results import (
    Fallback,
    Final,
    Retry,
    attempt_record,
    billed,
    canceled,
    classify,
    fallback_task,
    last_attempt,
    missing_result,
    refused_attempt,
    result_fields,
    result_json,
    retry_delay,
    with_prior_usd,
)
from batchbus.services.notifier.settings import NotifierSettings
from batchbus.shared import publishing, subjects
from batchbus.shared.budgets import Budgets, spent_usd
from batchbus.shared.cancels import Cancels
from batchbus.shared.models import (
    AcceptedTask,
    Attempt,
    BatchEnded,
    ManifestEntry,
    Result,
    ResultFields,
    parse_json,
)
from batchbus.shared.payloads import PayloadMissing, Payloads
from batchbus.shared.publishing import PubAcks, Raw, publish_accepted, publish_dead_letter
from batchbus.shared.records import BatchRecords

log = logging.getLogger("batchbus.notifier")

CHECKPOINT_EVERY = 1024  # result lines between progress records
WINDOW = 1024  # result lines settled at once: their publishes share the round trips
EXPIRED = {"type": "expired"}
Line = tuple[ManifestEntry, dict[str, Any]]  # a request's manifest entry and its result


class Delivery:
    def __init__(self, js: JetStreamContext, client: AsyncAnthropic, records: BatchRecords,
                 cancels: Cancels, settings: NotifierSettings, accounting: Accounting,
                 budgets: Budgets | None = None, payloads: Payloads | None = None) -> None:
        self.js = js
        self.claims = ClaimChecks(js, payloads or Payloads(
            js, settings.nats.payloads_max_age_seconds, settings.nats.replicas))
        self.budgets = budgets
        self.client = client
        self.cancels = cancels
        self.records = records
        self.settings = settings
        self.accounting = accounting
        self.acks = PubAcks(js)

    async def deliver(self, ended: BatchEnded) -> None:
        """Settles every request of the batch; safe to repeat (results carry Nats-Msg-Ids),
        and a repeat skips the lines an earlier run checkpointed."""
        found = await self.records.read(ended.intent_id)
        if found is None or found[0].state == "delivered":
            return  # delivered by an earlier run
        done = found[0].lines_done
        manifest = await self.records.manifest_index(ended.intent_id)
        lines = 0
        window: list[Line] = []  # lines settled together

        async def drain() -> None:
            await self.settle_all(window, ended.batch_id)
            window.clear()

        async for custom_id, result in self._lines(ended):
            raw = manifest.pop(custom_id, None)
            if raw is None:
                self.accounting.mismatch(ended.batch_id, custom_id)
                continue
            lines += 1
            if lines > done:
                window.append((ManifestEntry.from_row(raw), result))
            if len(window) >= WINDOW:
                await drain()
            if lines % CHECKPOINT_EVERY == 0 and lines > done:
                await drain()  # a checkpoint only ever covers settled lines
                await self._checkpoint(ended.intent_id, lines)
        await drain()
        # Requests the file did not mention; with no file at all, the batch ran out of time.
        absent = missing_result() if ended.results_available else EXPIRED
        for raw in manifest.values():
            window.append((ManifestEntry.from_row(raw), absent))
            if len(window) >= WINDOW:
                await drain()
        await drain()
        # Only now is the batch done with; a crash before this replays deduplicated results.
        await self.records.settle(ended.intent_id,
                                  lambda r: r.model_copy(update={"state": "delivered"}))
        log.info("delivered batch %s (%d lines)", ended.batch_id, lines)

    async def _lines(self, ended: BatchEnded) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The results file as it streams in; never held whole in memory.

        The SDK makes the call (auth, retries, the absolute results_url); the lines are read
        from its response as plain JSON, because building the SDK's typed objects for each
        line cost a third of the notifier's CPU. Blank lines are skipped.
        """
        if not ended.results_available:
            return
        decoder = await self.client.messages.batches.results(ended.batch_id)
        try:
            async for text in decoder.http_response.aiter_lines():
                if text.strip():
                    line = parse_json(text)
                    yield line["custom_id"], line["result"]
        finally:
            await decoder.close()

    async def settle_all(self, lines: Sequence[Line], batch_id: str) -> None:
        """Settles result lines together: each takes the steps it would alone (a retry, or
        a final result, its answer stored apart when too large for one message, then the
        deletion of its stored params, and for a newly stored one its accounting, budget and
        dead letter), but the final results are published at once and their acks awaited
        together. A
        failed line fails the call after the others are settled; the delivery is retried."""
        settling: list[Settling] = []
        needs_task: list[Awaitable[Settling | None]] = []
        for entry, result in lines:
            outcome = classify(result, entry.attempt, self.settings.max_attempts,
                               entry.fallback_model)
            if subjects.task_key(entry.tenant, entry.task_id) in self.cancels:
                outcome = canceled(result)
            if isinstance(outcome, Retry | Fallback) or outcome.exhausted:
                needs_task.append(self._with_task(entry, result, outcome, batch_id))
            else:
                settling.append(Settling(entry, result, outcome, None))
        errors: list[BaseException] = []
        for found in await asyncio.gather(*needs_task, return_exceptions=True):
            if isinstance(found, BaseException):
                errors.append(found)
            elif found is not None:
                settling.append(found)
        finals = [result_fields(s.entry, s.outcome, batch_id, self.accounting.prices)
                  for s in settling]
        ready: list[tuple[Settling, ResultFields, ResultFields, bytes]] = []
        for s, final, out in zip(settling, finals, await self.claims.published(finals),
                                 strict=True):
            if isinstance(out, BaseException):  # its answer could not be stored
                errors.append(out)
            else:
                ready.append((s, final, *out))
        acks = await self.acks.store([result_raw(published, s.entry.webhook, data)
                                      for s, _, published, data in ready])
        counted: list[tuple[ResultFields, ManifestEntry]] = []
        follow_ups: list[Awaitable[None]] = []
        for (s, final, published, _), ack in zip(ready, acks, strict=True):
            if not isinstance(ack, PubAck):
                errors.append(ack)
                continue
            # Its params are done with, but a dead letter's (kept to be looked into); on a
            # replay too, which may follow a crash before the delete.
            if s.entry.params_object is not None and not s.outcome.exhausted:
                follow_ups.append(self.claims.release(s.entry.tenant, s.entry.params_object))
            if not ack.duplicate:  # a replay was counted the first time
                counted.append((final, s.entry))
                if s.needs_follow_up(self.budgets is not None):
                    follow_ups.append(self._after_stored(s, published, batch_id))
        self.accounting.results(counted)
        errors += [e for e in await asyncio.gather(*follow_ups, return_exceptions=True) if e]
        if errors:
            raise errors[0]

    async def _with_task(self, entry: ManifestEntry, result: dict[str, Any],
                         outcome: Final | Retry | Fallback, batch_id: str) -> "Settling | None":
        """A retry or a fallback is sent back to the batcher (None); a final result keeps the
        attempt's task for its dead letter. Without its task (retention dropped it), or a
        fallback without its stored params, there is no next attempt: this one is final (a
        refused answer as it is)."""
        task = await self._task(entry)
        if isinstance(outcome, Retry | Fallback):
            if task is not None and await self._next_attempt(task, entry, result, outcome,
                                                             batch_id):
                return None
            outcome = last_attempt(result, entry.attempt)
        return Settling(entry, result, outcome, task)

    async def _next_attempt(self, task: AcceptedTask, entry: ManifestEntry,
                            result: dict[str, Any], outcome: Retry | Fallback,
                            batch_id: str) -> bool:
        """Sends the task's next attempt; False when a fallback cannot be sent, its stored
        params gone past the bucket's max age (the refused answer is then final)."""
        if isinstance(outcome, Retry):
            await self._retry(task, attempt_record(result, entry.attempt, batch_id), outcome)
            return True
        try:
            await self._fall_back(task, entry, outcome, batch_id)
        except PayloadMissing as exc:
            log.error("task %s/%s cannot go to its fallback: %s", entry.tenant, entry.task_id,
                      exc)
            return False
        return True

    async def _after_stored(self, s: "Settling", final: ResultFields, batch_id: str) -> None:
        await self._settle_budget(s.entry, s.outcome.message)
        if s.outcome.exhausted and s.task is not None:
            history = [*s.task.history, attempt_record(s.result, s.entry.attempt, batch_id)]
            await self._dead_letter(s.task, history, Result.model_validate(final))

    async def _settle_budget(self, entry: ManifestEntry, message: dict[str, Any] | None) -> None:
        """Swaps the task's reservation for what it cost. Only a newly stored result gets
        here, so a replay never settles twice; a crash just before keeps it reserved."""
        if entry.reservation is None or self.budgets is None:
            return
        usage = (message or {}).get("usage")
        spent = spent_usd(self.accounting.prices, entry.model, usage, realtime=False)
        actual = with_prior_usd(spent, entry.prior_cost)  # a refused attempt's too
        self.accounting.settlement(
            await self.budgets.settle_final(entry.tenant, entry.reservation, actual))

    async def _task(self, entry: ManifestEntry) -> AcceptedTask | None:
        """The attempt's task as the batcher got it; None if retention dropped it."""
        try:
            stored = await self.js.get_msg(subjects.STREAM_INTERNAL, entry.accepted_seq)
        except NotFoundError:  # any other error (a timeout) fails the delivery, which is retried
            log.error("task %s/%s is no longer in the stream", entry.tenant, entry.task_id)
            return None
        return AcceptedTask.model_validate_json(stored.data or b"")

    async def _retry(self, task: AcceptedTask, attempt: Any, retry: Retry) -> None:
        """Sends the next attempt back to the batcher, after its back-off."""
        delay = retry_delay(task.attempt, self.settings.retry_delay_seconds,
                            self.settings.retry_max_delay_seconds)
        nxt = task.model_copy(update={
            "attempt": task.attempt + 1, "history": [*task.history, attempt],
            "not_before": datetime.now(UTC) + timedelta(seconds=delay)})
        await publish_accepted(self.js, nxt)
        self.accounting.retry(retry.reason)

    async def _fall_back(self, task: AcceptedTask, entry: ManifestEntry, fallback: Fallback,
                         batch_id: str) -> None:
        """Sends a refused task to its fallback model as its next attempt: the API ignores
        server-side fallbacks in batches, so re-routing is ours. The refused answer was
        billed: counted here, once (a replayed line finds its next attempt stored)."""
        usage, cost = billed(fallback.message, entry.model, self.accounting.prices)
        refused = refused_attempt(entry.attempt, batch_id, entry.model, fallback.refusal, cost)
        stored = await self.claims.fallback_params(task, fallback.model)
        if await publish_accepted(self.js, fallback_task(task, refused, fallback.model,
                                                         stored=stored)):
            self.accounting.refused(entry.task_id, entry.model, usage, cost, fallback.refusal)
        log.info("task %s/%s refused by %s (%s); attempt %d goes to %s", entry.tenant,
                 entry.task_id, entry.model, fallback.refusal["category"], entry.attempt + 1,
                 fallback.model)

    async def _dead_letter(self, task: AcceptedTask, history: list[Attempt], final: Result) -> None:
        await publish_dead_letter(self.js, task, history, final)
        self.accounting.dead_letter()

    async def _checkpoint(self, intent_id: str, lines: int) -> None:
        await self.records.transition(intent_id, lambda r: r.model_copy(
            update={"lines_done": lines}) if lines > r.lines_done else None)


def result_raw(fields: ResultFields, webhook: str | None, payload: bytes | None = None) -> Raw:
    """What `result_message(Result(**fields), ...)` publishes, built without the Result:
    validating the Result we built and dumping it was a sixth of the notifier's CPU.
    `payload`: the fields' `result_json`, when made already."""
    tenant, task_id = fields["tenant"], fields["task_id"]
    return publishing.result_raw(tenant, task_id, payload or result_json(fields),
                                 subjects.result_msg_id(tenant, task_id), webhook)


@dataclass(frozen=True)
class Settling:
    """A result line whose final result is to be stored."""

    entry: ManifestEntry
    result: dict[str, Any]
    outcome: Final
    task: AcceptedTask | None  # the attempt's task, kept for a dead letter

    def needs_follow_up(self, budgets: bool) -> bool:
        return (budgets and self.entry.reservation is not None) or (
            self.outcome.exhausted and self.task is not None)

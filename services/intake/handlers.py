"""Intake: validate each task, claim its (tenant, task_id), pass it on or reject it."""

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import Header, PubAck
from nats.js.errors import APIError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from batchbus.services.intake.budgets import BudgetGate, Refusal
from batchbus.services.intake.live_models import LiveCatalog
from batchbus.services.intake.metrics import IntakeMetrics
from batchbus.services.intake.model_rules import check_models
from batchbus.services.intake.routing import Router
from batchbus.services.intake.steps import RETRY_DELAY, Admitted, Batch, Claimed, Handoff, Path
from batchbus.services.intake.validation import (
    Limits,
    Rejection,
    check_webhook,
    validate_params,
    validate_task,
)
from batchbus.shared import subjects
from batchbus.shared.cancels import Cancels
from batchbus.shared.catalog import default_catalog
from batchbus.shared.models import AcceptedTask, ErrorInfo, Reservation, Result, Task
from batchbus.shared.payloads import PayloadMissing, Payloads, PayloadTooLarge, Stored
from batchbus.shared.publishing import (
    PubAcks,
    Raw,
    accepted_message,
    publish_canceled,
    publish_result,
    realtime_message,
)
from batchbus.shared.runtime import handle_safely
from batchbus.shared.settings import NatsSettings

log = logging.getLogger("batchbus.intake")

# JetStream's "wrong last sequence" error codes (JSStreamWrongLastSequenceErrF and ...ConstantErr).
WRONG_LAST_SEQUENCE = (10071, 10164)
# Stored params read and parsed at once: each may be 32 MB, and a fetched batch holds many.
STORED_READS = 4
# What a task with stored params keeps of them once checked: the large parts are read again
# by whoever sends the request.
LARGE_PARAMS = frozenset({"messages", "system", "tools"})


class TaskIntake:
    def __init__(self, js: JetStreamContext, task_ids: KeyValue, cancels: Cancels,
                 limits: Limits, metrics: IntakeMetrics, router: Router,
                 budgets: BudgetGate | None = None, models: LiveCatalog | None = None,
                 payloads: Payloads | None = None) -> None:
        self.js = js
        self.payloads = payloads or Payloads(js, NatsSettings().payloads_max_age_seconds)
        self._reading = asyncio.Semaphore(STORED_READS)
        # The model catalog as last read; without one, the data file's.
        self.models = models or LiveCatalog(default_catalog(), None, metrics, every=0)
        self.budgets = budgets
        self.router = router
        self.task_ids = task_ids
        self.cancels = cancels
        self.limits = limits
        self.metrics = metrics
        self.acks = PubAcks(js)

    async def handle_cancel(self, msg: Msg) -> None:
        """Records a `{"task_id": ...}` cancel request from `batchbus.cancel.<tenant>`."""
        tenant = subjects.tenant_of_task_subject(msg.subject, subjects.CANCEL_PREFIX)
        try:
            task_id = json.loads(msg.data)["task_id"]
        except (ValueError, TypeError, KeyError, RecursionError):
            task_id = None
        if tenant is None or not isinstance(task_id, str) or not subjects.is_token(task_id):
            self.metrics.cancels.labels("invalid").inc()
            log.info("ignored a malformed cancel on %s", msg.subject[:120])
        else:
            await self.cancels.request(tenant, task_id)
            self.metrics.cancels.labels("requested").inc()
        await msg.ack()

    async def handle(self, msg: Msg) -> None:
        """Handles one task message (a batch of one)."""
        await self.handle_batch([msg])

    async def handle_cancels(self, msgs: Sequence[Msg]) -> None:
        await asyncio.gather(*(handle_safely(m, self.handle_cancel, RETRY_DELAY) for m in msgs))

    async def handle_batch(self, msgs: Sequence[Msg]) -> None:
        """Handles fetched task messages together; acks each only once its effect is stored.

        Every task takes the steps it would alone, in the same order: validation, webhook
        check and route decision; the claim of its id; cancel, budget reservation; the
        handoff. Each step runs for the whole batch before the next, so the claims and the
        handoffs of all the tasks are pipelined and their acknowledgements awaited at once,
        instead of a coroutine and two round trips per task. A task whose step fails is
        nak'd alone, never dropped; the others go on.
        """
        self.metrics.tasks_received.inc(len(msgs))
        self.metrics.batch_path_estimate.set(self.router.estimate(datetime.now(UTC)))
        batch = Batch(msgs)
        admitted = await batch.each(msgs, _itself, self._admit)
        stored = await self._store_claims(admitted)
        claimed = await batch.each(zip(admitted, stored, strict=True), _its_msg, self._claim)
        await self._hand_off(batch, await batch.each(claimed, _its_msg, self._prepare))
        await batch.answer()

    def _admit(self, msg: Msg) -> Admitted | Coroutine[Any, Any, Admitted | None]:
        """Validation, the webhook check and the route decision: the task with its route, or
        its rejection to store."""
        seq = msg.metadata.sequence.stream
        tenant = subjects.tenant_of_task_subject(msg.subject)
        outcome = validate_task(msg.data, self.limits)
        if tenant is not None and not isinstance(outcome, Rejection):
            outcome = check_webhook(outcome, tenant, self.limits) or outcome
        if tenant is None:
            return self._reject(subjects.INVALID_TENANT, seq, _bad_tenant(msg.subject, outcome))
        if isinstance(outcome, Rejection):
            return self._reject(tenant, seq, outcome)
        if outcome.params_object is not None:
            return self._admit_stored(msg, seq, tenant, outcome, outcome.params_object)
        return self._route(msg, seq, tenant, outcome)

    def _route(self, msg: Msg, seq: int, tenant: str, task: Task, stored: Stored | None = None
               ) -> Admitted | Coroutine[Any, Any, Admitted | None]:
        """The model checks and the route decision of a valid task."""
        catalog = self.models.current
        allowed = check_models(task, catalog)
        if isinstance(allowed, Rejection):
            return self._reject(tenant, seq, allowed)
        # A beta that exists only on the Batch API keeps the task off the real-time path.
        asked = "batch" if any(catalog.betas[b].batch_only for b in task.betas) else task.route
        decision = self.router.decide(asked, task.deadline, datetime.now(UTC))
        route = decision.route
        if stored:  # checked whole: from here on only the small fields are needed
            task = task.model_copy(update={"params": {
                k: v for k, v in task.params.items() if k not in LARGE_PARAMS}})
        if route is None:
            return self._past_deadline(msg, seq, tenant, task, decision.reason)
        return Admitted(msg, seq, tenant, task, route, decision.reason, allowed.warnings,
                        stored)

    async def _admit_stored(self, msg: Msg, seq: int, tenant: str, task: Task,
                            name: str) -> Admitted | None:
        """A task whose params are stored in its tenant's payload bucket, checked as if they
        were inline. Only that tenant's bucket is read: a task cannot name another's."""
        async with self._reading:
            try:
                data, digest = await self.payloads.load(tenant, name,
                                                        self.limits.max_params_bytes)
            except PayloadTooLarge as exc:
                await self._reject(tenant, seq, Rejection(
                    "too_large", f"{exc}: the Messages API's request size limit",
                    task.task_id, task.webhook))
                return None
            except PayloadMissing as exc:
                if await self._claimed(tenant, task.task_id):
                    # Accepted before: its params go once its final result is stored, so
                    # this is a late redelivery or a duplicate. No second result.
                    self.metrics.tasks_deduplicated.inc()
                    return None
                await self._reject(tenant, seq, Rejection("payload_missing", str(exc),
                                                          task.task_id, task.webhook))
                return None
            params = validate_params(data, self.limits)
            stored = Stored(name, len(data), digest)
            del data
        if isinstance(params, Rejection):
            await self._reject(tenant, seq, Rejection(params.reason, params.message,
                                                      task.task_id, task.webhook))
            return None
        admitted = self._route(msg, seq, tenant, task.model_copy(update={"params": params}),
                               stored)
        return admitted if isinstance(admitted, Admitted) else await admitted

    async def _past_deadline(self, msg: Msg, seq: int, tenant: str, task: Task,
                             reason: str) -> Admitted | None:
        """The deadline has passed, so no route: decided before the claim, so a task rejected
        for its deadline does not claim its id."""
        if await self._claimed(tenant, task.task_id):
            # Claimed, so accepted before (a rejection leaves no claim): a duplicate, or a
            # redelivery whose handoff id is the same on both routes. No second result.
            return Admitted(msg, seq, tenant, task, "batch", reason)
        await self._reject(tenant, seq, _too_late(task))
        return None

    async def _store_claims(self, admitted: list[Admitted]) -> list[PubAck | BaseException]:
        """First task message with its id wins; its own redelivery still passes. Each claim
        is `task_ids.create` as one publish with an expected last sequence, all pipelined."""
        bucket, stream = subjects.KV_TASK_IDS, subjects.kv_stream(subjects.KV_TASK_IDS)
        return await self.acks.store([Raw(
            subjects.kv_subject(bucket, subjects.task_key(a.tenant, a.task.task_id)),
            str(a.seq).encode(), stream, {Header.EXPECTED_LAST_SUBJECT_SEQUENCE: "0"})
            for a in admitted])

    def _claim(self, stored: tuple[Admitted, PubAck | BaseException]
               ) -> Claimed | Coroutine[Any, Any, Claimed]:
        """What the task's stored claim found: its id new, or taken (looked into)."""
        admitted, outcome = stored
        if isinstance(outcome, PubAck):
            return admitted, "new"
        if isinstance(outcome, APIError) and outcome.err_code in WRONG_LAST_SEQUENCE:
            return self._claim_taken(admitted)
        raise outcome  # not stored: this message fails

    async def _claim_taken(self, admitted: Admitted) -> Claimed:
        # Taken, or deleted (a tombstone is a last sequence too): nats-py's create tells
        # the two apart and recreates a deleted key. Rare, so the slower path is fine.
        key = subjects.task_key(admitted.tenant, admitted.task.task_id)
        value = str(admitted.seq).encode()
        try:
            await self.task_ids.create(key, value)
            return admitted, "new"
        except KeyWrongLastSequenceError:
            entry = await self.task_ids.get(key)
            return admitted, "redelivered" if entry.value == value else "duplicate"

    def _prepare(self, claimed: Claimed) -> Handoff | Coroutine[Any, Any, Handoff | None] | None:
        """A duplicate stops here; a canceled task gets its result; a budgeted tenant's task
        its reservation: what is left is the handoff."""
        admitted, claim = claimed
        tenant, task = admitted.tenant, admitted.task
        if claim == "duplicate":
            self.metrics.tasks_deduplicated.inc()
            return None
        if subjects.task_key(tenant, task.task_id) in self.cancels:
            return self._cancel(tenant, task, admitted.warnings)
        budgets = self.budgets
        if budgets is not None and tenant in budgets.limits:
            return self._reserve(budgets, admitted, claim == "redelivered")
        return admitted, self._accepted(admitted, None)

    async def _cancel(self, tenant: str, task: Task, warnings: Sequence[str] = ()) -> None:
        if await publish_canceled(self.js, tenant, task.task_id, task.metadata, 0,
                                  webhook=task.webhook, warnings=warnings):
            self.metrics.results.labels("canceled").inc()

    async def _reserve(self, budgets: BudgetGate, admitted: Admitted,
                       redelivered: bool) -> Handoff | None:
        """The handoff holding the task's worst case in its tenant's budget for the day it
        was published (UTC; a redelivery finds the same day), or None once it is refused:
        rejected, and its id freed."""
        msg, tenant, task = admitted.msg, admitted.tenant, admitted.task
        key = subjects.task_key(tenant, task.task_id)
        if msg.metadata.num_delivered > 1 and await self._rejected_before(tenant, task.task_id,
                                                                          admitted.seq):
            # Refused before a crash: deciding again could accept it as well.
            await self.task_ids.delete(key)
            return None
        held = await budgets.admit(
            tenant, task.task_id, task.params,
            len(msg.data) + (admitted.stored.size if admitted.stored else 0),
            msg.metadata.timestamp.astimezone(UTC).date(), admitted.route == "realtime",
            redelivered, task.fallback_model)
        if not isinstance(held, Refusal):
            return admitted, self._accepted(admitted, held)
        await self._reject(tenant, admitted.seq, Rejection(held.reason, held.message,
                                                           task.task_id, task.webhook),
                           error_type=held.reason)
        # Like any rejected task, it leaves its id free: it may be sent again tomorrow.
        await self.task_ids.delete(key)
        return None

    def _accepted(self, admitted: Admitted, reservation: Reservation | None) -> AcceptedTask:
        task = admitted.task
        if admitted.warnings:
            self.metrics.tasks_warned.inc()
            log.info("accepted task %s of %s with a warning: %s", task.task_id,
                     admitted.tenant, "; ".join(admitted.warnings))
        return AcceptedTask(
            tenant=admitted.tenant, task_id=task.task_id, params_object=task.params_object,
            params_digest=admitted.stored.digest if admitted.stored else None,
            # stored params are sent as stored: the task carries their model alone
            params={"model": task.params["model"]} if task.params_object else task.params,
            metadata=task.metadata, published_at=admitted.msg.metadata.timestamp,
            webhook=task.webhook, deadline=task.deadline, reservation=reservation,
            betas=task.betas, fallback_model=task.fallback_model,
            warnings=list(admitted.warnings))

    async def _hand_off(self, batch: Batch, handoffs: list[Handoff]) -> None:
        """Publishes every accepted task to the batcher or the real-time worker at once."""
        outcomes = await self.acks.store([
            realtime_message(task) if admitted.route == "realtime" else accepted_message(task)
            for admitted, task in handoffs])
        routes: Counter[tuple[Path, str]] = Counter()
        for (admitted, _), outcome in zip(handoffs, outcomes, strict=True):
            if isinstance(outcome, PubAck):
                routes[admitted.route, admitted.reason] += 1
            else:
                batch.fail(admitted.msg, outcome)
        # Counted once a batch: a Prometheus increment costs about 1 µs, a labelled one 3.
        if routes:
            self.metrics.tasks_accepted.inc(routes.total())
        for (route, reason), accepted in routes.items():
            self.metrics.route_decisions.labels(route, reason).inc(accepted)

    async def _rejected_before(self, tenant: str, task_id: str, seq: int) -> bool:
        """Whether this very message's rejection is already stored."""
        try:
            last = await self.js.get_last_msg(subjects.STREAM_RESULTS,
                                              subjects.results(tenant, task_id))
        except NotFoundError:
            return False
        return (last.headers or {}).get(subjects.MSG_ID) == subjects.rejected_msg_id(tenant, seq)

    async def _claimed(self, tenant: str, task_id: str) -> bool:
        try:
            await self.task_ids.get(subjects.task_key(tenant, task_id))
        except NotFoundError:  # absent, or deleted (budget refusals free their id)
            return False
        return True

    async def _reject(self, tenant: str, seq: int, rejection: Rejection,
                      error_type: str = "invalid_task") -> None:
        task_id = rejection.task_id or f"invalid-{seq}"
        result = Result(task_id=task_id, tenant=tenant, status="rejected",
                        error=ErrorInfo(type=error_type, message=rejection.message))
        # A readable task naming one of its tenant's endpoints hears of its rejection there too.
        known = rejection.webhook in self.limits.webhooks.get(tenant, ())
        if await publish_result(self.js, result, subjects.rejected_msg_id(tenant, seq),
                                rejection.webhook if known else None):
            self.metrics.tasks_rejected.labels(rejection.reason).inc()
            self.metrics.results.labels("rejected").inc()
        log.info("rejected task %s of %s: %s", task_id, tenant, rejection.message)


def _itself(msg: Msg) -> Msg:
    return msg


def _its_msg(pair: tuple[Admitted, object]) -> Msg:
    return pair[0].msg


def _too_late(task: Task) -> Rejection:
    assert task.deadline is not None
    return Rejection("deadline_passed", f"deadline {task.deadline.isoformat()} has already "
                     "passed: no route can meet it", task.task_id, task.webhook)


def _bad_tenant(subject: str, outcome: object) -> Rejection:
    return Rejection("bad_tenant", f"subject {subject[:120]!r} is not batchbus.tasks.<tenant> "
                     f"with a tenant matching {subjects.TOKEN_PATTERN}",
                     getattr(outcome, "task_id", None))

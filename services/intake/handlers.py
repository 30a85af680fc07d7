"""Intake: validate each task, claim its (tenant, task_id), pass it on or reject it."""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import Header, PubAck
from nats.js.errors import APIError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from batchbus.services.intake.routing import Decision, Router
from batchbus.services.intake.validation import Limits, Rejection, check_webhook, validate_task
from batchbus.shared import subjects
from batchbus.shared.budgets import BudgetGate, Refusal
from batchbus.shared.cancels import Cancels, publish_canceled
from batchbus.shared.metrics import Metrics
from batchbus.shared.models import AcceptedTask, ErrorInfo, Reservation, Result, Task
from batchbus.shared.publishing import PubAcks, Raw, accepted_message, publish_result, realtime_message

log = logging.getLogger("batchbus.intake")

Claim = Literal["new", "redelivered", "duplicate"]
# JetStream's "wrong last sequence" error codes (JSStreamWrongLastSequenceErrF and ...ConstantErr).
WRONG_LAST_SEQUENCE = (10071, 10164)


class TaskIntake:
    def __init__(self, js: JetStreamContext, task_ids: KeyValue, cancels: Cancels,
                 limits: Limits, metrics: Metrics, router: Router,
                 budgets: BudgetGate | None = None) -> None:
        self.js = js
        self.budgets = budgets
        self.router = router
        self.task_ids = task_ids
        self.cancels = cancels
        self.limits = limits
        self.metrics = metrics
        self.acks = PubAcks(js)

    async def handle_safely(self, msg: Msg, handler: Callable[[Msg], Awaitable[None]]) -> None:
        try:
            await handler(msg)
        except Exception:
            # Not acked: retried after a pause, never dropped and never terminated.
            log.exception("message at stream seq %s failed; retrying",
                          msg.metadata.sequence.stream)
            await msg.nak(delay=2.0)

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
        await asyncio.gather(*(self.handle_safely(m, self.handle_cancel) for m in msgs))

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
        steps = [_Step(msg, msg.metadata.sequence.stream) for msg in msgs]
        await _each(steps, self._admit)
        await self._claim_all([s for s in steps if s.live])
        await _each([s for s in steps if s.live], self._prepare)
        await self._hand_off([s for s in steps if s.live])
        failed = [s for s in steps if s.failure is not None]
        if failed:  # one line per batch: while NATS is away every message fails alike
            log.error("%d of %d messages failed (the first at stream seq %s); retrying them",
                      len(failed), len(steps), failed[0].seq, exc_info=failed[0].failure)
        for step in steps:
            try:
                if step.failure is None:
                    await step.msg.ack()
                else:  # retried after a pause, never dropped and never terminated
                    await step.msg.nak(delay=2.0)
            except Exception as exc:  # the connection is gone: it comes back after ack_wait
                log.warning("could not answer the message at stream seq %s: %r", step.seq, exc)

    def _admit(self, step: "_Step") -> Awaitable[None] | None:
        """Validation, the webhook check and the route decision: a rejection, or a route."""
        msg, seq = step.msg, step.seq
        tenant = subjects.tenant_of_task_subject(msg.subject)
        outcome = validate_task(msg.data, self.limits)
        if tenant is not None and not isinstance(outcome, Rejection):
            outcome = check_webhook(outcome, tenant, self.limits) or outcome
        step.live = False
        if tenant is None:
            return self._reject(subjects.INVALID_TENANT, seq, _bad_tenant(msg.subject, outcome))
        if isinstance(outcome, Rejection):
            return self._reject(tenant, seq, outcome)
        step.tenant, step.task = tenant, outcome
        decision = self.router.decide(outcome.route, outcome.deadline, datetime.now(UTC))
        if decision.route is None:
            return self._past_deadline(step, decision)
        step.decision, step.live = decision, True
        return None

    async def _past_deadline(self, step: "_Step", decision: Decision) -> None:
        """The deadline has passed, so no route: decided before the claim, so a task rejected
        for its deadline does not claim its id."""
        assert step.tenant is not None and step.task is not None
        if await self._claimed(step.tenant, step.task.task_id):
            # Claimed, so accepted before (a rejection leaves no claim): a duplicate, or a
            # redelivery whose handoff id is the same on both routes. No second result.
            step.decision, step.live = Decision("batch", decision.reason), True
        else:
            await self._reject(step.tenant, step.seq, _too_late(step.task))

    async def _claim_all(self, steps: list["_Step"]) -> None:
        """First task message with its id wins; its own redelivery still passes. Each claim
        is `task_ids.create` as one publish with an expected last sequence, all pipelined."""
        bucket, stream = subjects.KV_TASK_IDS, subjects.kv_stream(subjects.KV_TASK_IDS)
        outcomes = await self.acks.store([Raw(
            subjects.kv_subject(bucket, subjects.task_key(s.tenant or "", s.task_id)),
            str(s.seq).encode(), stream, {Header.EXPECTED_LAST_SUBJECT_SEQUENCE: "0"})
            for s in steps])
        taken: list[_Step] = []
        for step, outcome in zip(steps, outcomes, strict=True):
            if isinstance(outcome, PubAck):
                step.claim = "new"
            elif isinstance(outcome, APIError) and outcome.err_code in WRONG_LAST_SEQUENCE:
                taken.append(step)
            else:
                step.fail(outcome)
        await _each(taken, self._claim_taken)

    async def _claim_taken(self, step: "_Step") -> None:
        # Taken, or deleted (a tombstone is a last sequence too): nats-py's create tells
        # the two apart and recreates a deleted key. Rare, so the slower path is fine.
        key = subjects.task_key(step.tenant or "", step.task_id)
        value = str(step.seq).encode()
        try:
            await self.task_ids.create(key, value)
            step.claim = "new"
        except KeyWrongLastSequenceError:
            entry = await self.task_ids.get(key)
            step.claim = "redelivered" if entry.value == value else "duplicate"

    def _prepare(self, step: "_Step") -> Awaitable[None] | None:
        """A duplicate stops here; a canceled task gets its result; a budgeted tenant's task
        its reservation: what is left is the handoff."""
        assert step.tenant is not None and step.task is not None
        if step.claim == "duplicate":
            self.metrics.tasks_deduplicated.inc()
            step.live = False
        elif subjects.task_key(step.tenant, step.task_id) in self.cancels:
            step.live = False
            return self._cancel(step.tenant, step.task)
        elif self._budgeted(step.tenant):
            return self._reserve_for(step)
        else:
            step.handoff = self._accepted(step, None)
        return None

    async def _cancel(self, tenant: str, task: Task) -> None:
        if await publish_canceled(self.js, tenant, task.task_id, task.metadata, 0,
                                  webhook=task.webhook):
            self.metrics.results.labels("canceled").inc()

    async def _reserve_for(self, step: "_Step") -> None:
        assert step.tenant is not None and step.task is not None and step.decision is not None
        reservation = await self._reserve(step.msg, step.tenant, step.task, step.decision,
                                          step.claim == "redelivered")
        if reservation is False:
            step.live = False
        else:
            step.handoff = self._accepted(step, reservation)

    def _accepted(self, step: "_Step", reservation: Reservation | None) -> AcceptedTask:
        task, msg = step.task, step.msg
        assert step.tenant is not None and task is not None
        return AcceptedTask(
            tenant=step.tenant, task_id=task.task_id, params=task.params,
            metadata=task.metadata, published_at=msg.metadata.timestamp,
            webhook=task.webhook, deadline=task.deadline, reservation=reservation)

    async def _hand_off(self, steps: list["_Step"]) -> None:
        """Publishes every accepted task to the batcher or the real-time worker at once."""
        ready = [(s, s.handoff) for s in steps if s.handoff is not None]
        outcomes = await self.acks.store([
            realtime_message(task) if s.route == "realtime" else accepted_message(task)
            for s, task in ready])
        for (step, _), outcome in zip(ready, outcomes, strict=True):
            if not isinstance(outcome, PubAck):
                step.fail(outcome)
                continue
            assert step.decision is not None and step.decision.route is not None
            self.metrics.tasks_accepted.inc()
            self.metrics.route_decisions.labels(step.decision.route, step.decision.reason).inc()

    def _budgeted(self, tenant: str) -> bool:
        return self.budgets is not None and tenant in self.budgets.limits

    async def _reserve(self, msg: Msg, tenant: str, task: Task, decision: Decision,
                       redelivered: bool) -> Reservation | Literal[False] | None:
        """Holds the task's worst case in its tenant's budget for the day it was published
        (UTC; a redelivery finds the same day). False: rejected here; None: no budget."""
        assert self.budgets is not None  # only budgeted tenants come here
        seq, key = msg.metadata.sequence.stream, subjects.task_key(tenant, task.task_id)
        if msg.metadata.num_delivered > 1 and await self._rejected_before(tenant, task.task_id,
                                                                          seq):
            # Refused before a crash: deciding again could accept it as well.
            await self.task_ids.delete(key)
            return False
        held = await self.budgets.admit(
            tenant, task.task_id, task.params, len(msg.data),
            msg.metadata.timestamp.astimezone(UTC).date(), decision.route == "realtime",
            redelivered)
        if not isinstance(held, Refusal):
            return held
        await self._reject(tenant, seq, Rejection(held.reason, held.message, task.task_id,
                                                  task.webhook), error_type=held.reason)
        # Like any rejected task, it leaves its id free: it may be sent again tomorrow.
        await self.task_ids.delete(key)
        return False

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


@dataclass
class _Step:
    """One task message on its way through the steps of its batch."""

    msg: Msg
    seq: int
    live: bool = True  # False once settled (rejected, duplicate, canceled) or failed
    tenant: str | None = None
    task: Task | None = None
    decision: Decision | None = None
    claim: Claim | None = None
    handoff: AcceptedTask | None = None
    failure: BaseException | None = None

    @property
    def task_id(self) -> str:
        assert self.task is not None
        return self.task.task_id

    @property
    def route(self) -> str | None:
        return self.decision.route if self.decision else None

    def fail(self, exc: BaseException) -> None:
        self.failure, self.live, self.handoff = exc, False, None


async def _each(steps: list[_Step], step: Callable[[_Step], Awaitable[None] | None]) -> None:
    """Runs `step` for each; what it returns to await (a round trip, rare on the hot path)
    runs concurrently. An error fails only its own task."""
    waits: list[tuple[_Step, Awaitable[None]]] = []
    for s in steps:
        try:
            pending = step(s)
        except Exception as exc:
            s.fail(exc)
            continue
        if pending is not None:
            waits.append((s, pending))
    if not waits:
        return
    outcomes = await asyncio.gather(*(w for _, w in waits), return_exceptions=True)
    for (s, _), outcome in zip(waits, outcomes, strict=True):
        if isinstance(outcome, Exception):
            s.fail(outcome)
        elif isinstance(outcome, BaseException):
            raise outcome


def _too_late(task: Task) -> Rejection:
    assert task.deadline is not None
    return Rejection("deadline_passed", f"deadline {task.deadline.isoformat()} has already "
                     "passed: no route can meet it", task.task_id, task.webhook)


def _bad_tenant(subject: str, outcome: object) -> Rejection:
    return Rejection("bad_tenant", f"subject {subject[:120]!r} is not batchbus.tasks.<tenant> "
                     f"with a tenant matching {subjects.TOKEN_PATTERN}",
                     getattr(outcome, "task_id", None))

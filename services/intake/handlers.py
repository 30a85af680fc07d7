"""Intake: validate each task, claim its (tenant, task_id), pass it on or reject it."""

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from services.intake.routing import Decision, Router
from services.intake.validation import Limits, Rejection, check_webhook, validate_task
from shared import subjects
from shared.budgets import BudgetGate, Refusal
from shared.cancels import Cancels, publish_canceled
from shared.metrics import Metrics
from shared.models import AcceptedTask, ErrorInfo, Reservation, Result, Task
from shared.publishing import ACK_TIMEOUT, publish_accepted, publish_realtime, publish_result

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

    async def handle_safely(self, msg: Msg,
                            handler: Callable[[Msg], Awaitable[None]] | None = None) -> None:
        try:
            await (handler or self.handle)(msg)
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
        """Handles one task message; acks only once its effect is stored."""
        self.metrics.tasks_received.inc()
        seq = msg.metadata.sequence.stream
        tenant = subjects.tenant_of_task_subject(msg.subject)
        outcome = validate_task(msg.data, self.limits)
        if tenant is not None and not isinstance(outcome, Rejection):
            outcome = check_webhook(outcome, tenant, self.limits) or outcome
        if tenant is None:
            await self._reject(subjects.INVALID_TENANT, seq, _bad_tenant(msg.subject, outcome))
        elif isinstance(outcome, Rejection):
            await self._reject(tenant, seq, outcome)
        elif (decision := await self.choose_route(tenant, outcome)).route is None:
            await self._reject(tenant, seq, _too_late(outcome))
        elif (claim := await self._claim(tenant, outcome.task_id, seq)) == "duplicate":
            self.metrics.tasks_deduplicated.inc()
        elif subjects.task_key(tenant, outcome.task_id) in self.cancels:
            if await publish_canceled(self.js, tenant, outcome.task_id, outcome.metadata, 0,
                                      webhook=outcome.webhook):
                self.metrics.results.labels("canceled").inc()
        elif (reservation := await self._reserve(msg, tenant, outcome, decision,
                                                 claim == "redelivered")) is not False:
            await self._accept(AcceptedTask(
                tenant=tenant, task_id=outcome.task_id, params=outcome.params,
                metadata=outcome.metadata, published_at=msg.metadata.timestamp,
                webhook=outcome.webhook, deadline=outcome.deadline,
                reservation=reservation), decision)
        await msg.ack()

    async def _reserve(self, msg: Msg, tenant: str, task: Task, decision: Decision,
                       redelivered: bool) -> Reservation | Literal[False] | None:
        """Holds the task's worst case in its tenant's budget for the day it was published
        (UTC; a redelivery finds the same day). None: no budget; False: rejected here."""
        if self.budgets is None or tenant not in self.budgets.limits:
            return None
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

    async def choose_route(self, tenant: str, task: Task) -> Decision:
        """Batch, real-time, or (a deadline already past) neither: decided before the claim,
        so a task rejected for its deadline does not claim its id."""
        now = datetime.now(UTC)
        decision = self.router.decide(task.route, task.deadline, now)
        self.metrics.batch_path_estimate.set(self.router.estimate(now))
        if decision.route is None and await self._claimed(tenant, task.task_id):
            # Claimed, so accepted before (a rejection leaves no claim): a duplicate, or a
            # redelivery whose handoff id is the same on both routes. No second result.
            return Decision("batch", decision.reason)
        return decision

    async def _claimed(self, tenant: str, task_id: str) -> bool:
        try:
            await self.task_ids.get(subjects.task_key(tenant, task_id))
        except NotFoundError:  # absent, or deleted (budget refusals free their id)
            return False
        return True

    async def _accept(self, task: AcceptedTask, decision: Decision) -> None:
        if decision.route == "realtime":
            await publish_realtime(self.js, task)
        else:
            await publish_accepted(self.js, task)
        self.metrics.tasks_accepted.inc()
        self.metrics.route_decisions.labels(decision.route, decision.reason).inc()

    async def _claim(self, tenant: str, task_id: str, seq: int) -> Claim:
        """First task message with this id wins; its own redelivery still passes."""
        key = subjects.task_key(tenant, task_id)
        value = str(seq).encode()
        if await self._create_pipelined(key, value):
            return "new"
        # Taken, or deleted (a tombstone is a last sequence too): nats-py's create tells
        # the two apart and recreates a deleted key. Rare, so the slower path is fine.
        try:
            await self.task_ids.create(key, value)
            return "new"
        except KeyWrongLastSequenceError:
            entry = await self.task_ids.get(key)
            return "redelivered" if entry.value == value else "duplicate"

    async def _create_pipelined(self, key: str, value: bytes) -> bool:
        """`task_ids.create` as one publish with an expected last sequence. False if the key
        has a last sequence, that is exists or was deleted."""
        # A request, not publish_async: nats-py 2.16 raises publish_async's error replies
        # inside its reply callback instead of failing the future, so a taken key (every
        # duplicate) hung until the timeout and was retried forever.
        try:
            await self.js.publish(
                subjects.kv_subject(subjects.KV_TASK_IDS, key), value, timeout=ACK_TIMEOUT,
                stream=subjects.kv_stream(subjects.KV_TASK_IDS),
                headers={Header.EXPECTED_LAST_SUBJECT_SEQUENCE: "0"})
        except APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                return False
            raise
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


def _too_late(task: Task) -> Rejection:
    assert task.deadline is not None
    return Rejection("deadline_passed", f"deadline {task.deadline.isoformat()} has already "
                     "passed: no route can meet it", task.task_id, task.webhook)


def _bad_tenant(subject: str, outcome: object) -> Rejection:
    return Rejection("bad_tenant", f"subject {subject[:120]!r} is not batchbus.tasks.<tenant> "
                     f"with a tenant matching {subjects.TOKEN_PATTERN}",
                     getattr(outcome, "task_id", None))

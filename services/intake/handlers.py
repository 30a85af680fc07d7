"""Intake: validate each task, claim its (tenant, task_id), pass it on or reject it."""

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.intake.validation import Limits, Rejection, validate_task
from shared import subjects
from shared.cancels import Cancels, publish_canceled
from shared.metrics import Metrics
from shared.models import AcceptedTask, ErrorInfo, Result
from shared.publishing import publish_accepted, publish_result

log = logging.getLogger("batchbus.intake")

Claim = Literal["new", "redelivered", "duplicate"]


class TaskIntake:
    def __init__(self, js: JetStreamContext, task_ids: KeyValue, cancels: Cancels,
                 limits: Limits, metrics: Metrics) -> None:
        self.js = js
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
        if tenant is None:
            await self._reject(subjects.INVALID_TENANT, seq, _bad_tenant(msg.subject, outcome))
        elif isinstance(outcome, Rejection):
            await self._reject(tenant, seq, outcome)
        elif await self._claim(tenant, outcome.task_id, seq) == "duplicate":
            self.metrics.tasks_deduplicated.inc()
        elif subjects.task_key(tenant, outcome.task_id) in self.cancels:
            if await publish_canceled(self.js, tenant, outcome.task_id, outcome.metadata, 0):
                self.metrics.results.labels("canceled").inc()
        else:
            await self._accept(AcceptedTask(
                tenant=tenant, task_id=outcome.task_id, params=outcome.params,
                metadata=outcome.metadata, published_at=msg.metadata.timestamp))
        await msg.ack()

    async def _accept(self, task: AcceptedTask) -> None:
        await publish_accepted(self.js, task)
        self.metrics.tasks_accepted.inc()

    async def _claim(self, tenant: str, task_id: str, seq: int) -> Claim:
        """First task message with this id wins; its own redelivery still passes."""
        key = subjects.task_key(tenant, task_id)
        try:
            await self.task_ids.create(key, str(seq).encode())
            return "new"
        except KeyWrongLastSequenceError:
            entry = await self.task_ids.get(key)
            return "redelivered" if entry.value == str(seq).encode() else "duplicate"

    async def _reject(self, tenant: str, seq: int, rejection: Rejection) -> None:
        task_id = rejection.task_id or f"invalid-{seq}"
        result = Result(task_id=task_id, tenant=tenant, status="rejected",
                        error=ErrorInfo(type="invalid_task", message=rejection.message))
        if await publish_result(self.js, result, subjects.rejected_msg_id(tenant, seq)):
            self.metrics.tasks_rejected.labels(rejection.reason).inc()
            self.metrics.results.labels("rejected").inc()
        log.info("rejected task %s of %s: %s", task_id, tenant, rejection.message)


def _bad_tenant(subject: str, outcome: object) -> Rejection:
    return Rejection("bad_tenant", f"subject {subject[:120]!r} is not batchbus.tasks.<tenant> "
                     f"with a tenant matching {subjects.TOKEN_PATTERN}",
                     getattr(outcome, "task_id", None))

"""The real-time route: tasks that asked for it, or whose deadline the batch path cannot meet,
go to the Messages API at full price, a few at a time, and get their final Result here.

Never silently pays twice: a marker in KV `realtime_calls` is written before each call. A
task message that comes back while its marker says a call was under way (the worker died
mid-call, so the call may have run and been billed) counts that call as a used attempt: it is
made again only while attempts remain, and is counted as `interrupted`.

A refused answer (stop_reason "refusal") of a task with a fallback model is not final here:
the task's next attempt goes to the batch path on that model, like a retry of a batch task
(the marker says `rerouted` until it is handed over, so a repeat never calls again).

Stored params (`params_object`, shared/payloads.py) are read for each call; an answer too
large for one message is stored and its Result names it (claims.py).
"""

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import anthropic
from anthropic import AsyncAnthropic
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, Field

from batchbus.services.notifier.accounting import Accounting
from batchbus.services.notifier.claims import ClaimChecks
from batchbus.services.notifier.results import (
    add_cost,
    fallback_task,
    refusal_of,
    refused_attempt,
    retry_delay,
    usage_fields,
    usage_of,
    with_prior,
    with_prior_usd,
)
from batchbus.services.notifier.settings import NotifierSettings
from batchbus.shared import consumer, subjects
from batchbus.shared.anthropic_client import beta_headers, retry_after
from batchbus.shared.budgets import Budgets, spent_usd
from batchbus.shared.cancels import Cancels
from batchbus.shared.models import (
    AcceptedTask,
    Attempt,
    Cost,
    CostFields,
    ErrorInfo,
    Refusal,
    RefusalFields,
    Result,
    Status,
)
from batchbus.shared.payloads import PayloadMissing, Payloads
from batchbus.shared.pricing import PriceTable, TokenCounts
from batchbus.shared.publishing import publish_accepted, publish_dead_letter, publish_result
from batchbus.shared.runtime import kept_alive, readable, serve_each

log = logging.getLogger("batchbus.notifier")

T = TypeVar("T")
# The SDK's own timeout for a non-streaming Messages call; ANTHROPIC_TIMEOUT_SECONDS is sized
# for the batch endpoints, whose calls return quickly.
CALL_TIMEOUT_SECONDS = 600.0
SHUTDOWN_GRACE_SECONDS = 10.0  # calls under way may finish when the service stops
RETRY_DELAY_SECONDS = 5.0  # before a task whose handling failed is handled again
NO_BATCH = ""  # Attempt.batch_id of a real-time attempt


class CallMarker(BaseModel):
    """A task's real-time progress, written before each call and after each outcome."""

    # rerouted: the last call was refused, and the task goes to its fallback model on the
    # batch path (its history ends with the refusal).
    state: Literal["calling", "failed", "rerouted", "done"]
    attempt: int  # the call under way, or the last one made
    history: list[Attempt] = Field(default_factory=list)  # the calls that failed


class UnexpectedReply(Exception):
    """A 2xx answer that is not a JSON message."""


@dataclass(frozen=True)
class CallFailure:
    transient: bool
    outcome: str  # metric label
    error: ErrorInfo
    retry_after: float | None = None


def classify_failure(exc: anthropic.APIError | UnexpectedReply) -> CallFailure:
    """Transient (429, 5xx, 529, connection errors and timeouts, or what `x-should-retry`
    says) is worth another attempt; any other answer is the request's own fault."""
    if isinstance(exc, anthropic.APITimeoutError):
        # The request may have run and been billed: retried like the SDK would, counted apart.
        return CallFailure(True, "timeout", ErrorInfo(type="timeout_error", message=exc.message))
    if isinstance(exc, anthropic.APIConnectionError):
        return CallFailure(True, "connection_error",
                           ErrorInfo(type="api_error", message=exc.message))
    if not isinstance(exc, anthropic.APIStatusError):
        return CallFailure(False, "client_error", ErrorInfo(type="api_error", message=str(exc)))
    status = exc.status_code
    should = exc.response.headers.get("x-should-retry")
    transient = should == "true" if should in ("true", "false") else (
        status in (408, 409, 429) or status >= 500)
    outcome = ("rate_limited" if status == 429 else "overloaded" if status == 529
               else "server_error" if status >= 500 else "client_error")
    kind = exc.type or ("api_error" if status >= 500 else "invalid_request_error")
    return CallFailure(transient, outcome, ErrorInfo(type=kind, message=exc.api_message or
                                                     f"HTTP {status}"), retry_after(exc))


def realtime_cost(prices: PriceTable, model: str, tokens: TokenCounts) -> CostFields | None:
    """A real-time call's cost at full price: batch_usd (what was spent) equals realtime_usd,
    and saved_usd is 0."""
    full = prices.realtime_usd(model, tokens)
    if full is None:
        return None
    return {"batch_usd": float(full), "realtime_usd": float(full), "saved_usd": 0.0}


def realtime_result(task: AcceptedTask, status: Status, attempts: int, prices: PriceTable,
                    message: dict[str, Any] | None = None,
                    error: ErrorInfo | None = None) -> Result:
    """The task's final Result, at full price (see realtime_cost) and with what its earlier
    billed attempts cost."""
    usage = cost = refusal = None
    if message is not None:
        usage, tokens = usage_of(message)
        cost = realtime_cost(prices, str(task.params.get("model")), tokens)
        refusal = refusal_of(message)
    total = with_prior(cost, message is not None, task.prior_cost)
    return Result(task_id=task.task_id, tenant=task.tenant, status=status, message=message,
                  error=error, usage=usage, cost=None if total is None else Cost(**total),
                  route="realtime", attempts=attempts, metadata=task.metadata,
                  warnings=task.warnings, refusal=None if refusal is None else Refusal(**refusal))


class RealtimeCalls:
    def __init__(self, js: JetStreamContext, client: AsyncAnthropic, markers: KeyValue,
                 cancels: Cancels, settings: NotifierSettings, accounting: Accounting,
                 budgets: Budgets | None = None, payloads: Payloads | None = None) -> None:
        self.js = js
        self.budgets = budgets
        self.claims = ClaimChecks(js, payloads or Payloads(
            js, settings.nats.payloads_max_age_seconds, settings.nats.replicas))
        # Never retried by the SDK: a retried POST could run and bill the request twice.
        self.client = client.with_options(
            max_retries=0, timeout=max(CALL_TIMEOUT_SECONDS, settings.anthropic.timeout_seconds))
        self.markers = markers
        self.cancels = cancels
        self.settings = settings
        self.accounting = accounting

    async def run(self) -> None:
        """A service loop: at most NOTIFIER_REALTIME_CONCURRENCY tasks handled at once. A task
        whose handling fails is tried again later; its marker keeps a repeat from paying
        silently."""
        async with consumer.pull(self.js, subjects.REALTIME_ALL,
                                 subjects.DURABLE_NOTIFIER_REALTIME, subjects.STREAM_INTERNAL,
                                 ConsumerConfig(ack_wait=self.settings.ack_wait_seconds,
                                                max_deliver=-1)) as psub:
            await serve_each(psub, self.handle, at_once=self.settings.realtime_concurrency,
                             retry_delay=RETRY_DELAY_SECONDS, grace=SHUTDOWN_GRACE_SECONDS)

    async def handle(self, msg: Msg) -> None:
        if (task := await readable(msg, AcceptedTask, "real-time task")) is None:
            return
        key = subjects.task_key(task.tenant, task.task_id)
        marker, revision = await self._marker(key)
        if marker is not None and marker.state == "done":
            await msg.ack()
            return
        if marker is not None and marker.state == "rerouted" and task.fallback_model:
            await self._hand_over(msg, task, key, marker, task.fallback_model)  # again
            return
        history = marker.history if marker is not None else []
        if marker is not None and marker.state == "calling":
            if await self._has_result(task):
                await msg.ack()  # died after publishing: the result is there
                return
            self.accounting.realtime_call("interrupted")
            log.warning("real-time call %d of %s/%s was interrupted; it may have been billed",
                        marker.attempt, task.tenant, task.task_id)
            history = [*history, Attempt(attempt=marker.attempt, batch_id=NO_BATCH,
                                         outcome="interrupted", message="the notifier stopped "
                                         "during the call, which may have run and been billed")]
        attempt = marker.attempt + 1 if marker is not None else 1
        if key in self.cancels:
            error = ErrorInfo(type="canceled", message="canceled at the owner's request")
            await self._finish(msg, task, realtime_result(
                task, "canceled", attempt - 1, self.accounting.prices, error=error), key)
        elif attempt > self.settings.max_attempts:  # only after an interrupted last attempt
            await self._exhausted(msg, task, key, history, attempt - 1)
        else:
            await self._attempt(msg, task, key, history, attempt, revision)

    async def _attempt(self, msg: Msg, task: AcceptedTask, key: str, history: list[Attempt],
                       attempt: int, revision: int) -> None:
        """One call: final on success or a permanent error, else back-off and come back."""
        try:
            params = await self.claims.params(task)
        except (PayloadMissing, ValueError) as exc:  # nothing to send: final, never a call
            kind = "payload_missing" if isinstance(exc, PayloadMissing) else "invalid_request_error"
            await self._finish(msg, task, realtime_result(
                task, "errored", attempt - 1, self.accounting.prices,
                error=ErrorInfo(type=kind, message=str(exc))), key)
            return
        calling = CallMarker(state="calling", attempt=attempt, history=history)
        if await self._mark(key, calling, revision) is None:
            # Another worker wrote the marker meanwhile: it has the task; look again later.
            await msg.nak(delay=self.settings.ack_wait_seconds)
            return
        try:
            async with kept_alive(msg.in_progress, self.settings.ack_wait_seconds / 4):
                message = await self._call(params, task.betas)
        except (anthropic.APIError, UnexpectedReply) as exc:
            failure = classify_failure(exc)
            self.accounting.realtime_call(failure.outcome)
            history = [*history, Attempt(attempt=attempt, batch_id=NO_BATCH,
                                         outcome=failure.error.type,
                                         message=failure.error.message)]
            if not failure.transient:
                await self._finish(msg, task, realtime_result(
                    task, "errored", attempt, self.accounting.prices, error=failure.error), key)
            elif attempt >= self.settings.max_attempts:
                await self._exhausted(msg, task, key, history, attempt)
            else:
                await self.markers.put(key, CallMarker(
                    state="failed", attempt=attempt, history=history).model_dump_json().encode())
                delay = retry_delay(attempt, self.settings.retry_delay_seconds,
                                    self.settings.retry_max_delay_seconds)
                await msg.nak(delay=min(max(delay, failure.retry_after or 0.0),
                                        self.settings.retry_max_delay_seconds))
            return
        self.accounting.realtime_call("succeeded")
        refusal = refusal_of(message)
        if refusal is not None and task.fallback_model and attempt < self.settings.max_attempts:
            await self._fall_back(msg, task, key, history, attempt, message, refusal,
                                  task.fallback_model)
            return
        await self._finish(msg, task, realtime_result(
            task, "succeeded", attempt, self.accounting.prices, message=message), key)

    async def _fall_back(self, msg: Msg, task: AcceptedTask, key: str, history: list[Attempt],
                         attempt: int, message: dict[str, Any], refusal: RefusalFields,
                         model: str) -> None:
        """A refused answer: the task's next attempt goes to `model` on the batch path. The
        call was billed: counted now, once (a repeat finds the marker `rerouted`)."""
        refused_model = str(task.params.get("model"))
        tokens = TokenCounts.from_usage(message.get("usage") or {})
        cost = realtime_cost(self.accounting.prices, refused_model, tokens)
        self.accounting.refused(task.task_id, refused_model, usage_fields(tokens), cost, refusal)
        rerouted = CallMarker(state="rerouted", attempt=attempt, history=[
            *history, refused_attempt(attempt, NO_BATCH, refused_model, refusal, cost)])
        await self.markers.put(key, rerouted.model_dump_json().encode())
        log.info("task %s/%s refused by %s (%s); attempt %d goes to %s in a batch",
                 task.tenant, task.task_id, refused_model, refusal["category"], attempt + 1,
                 model)
        await self._hand_over(msg, task, key, rerouted, model)

    async def _hand_over(self, msg: Msg, task: AcceptedTask, key: str, rerouted: CallMarker,
                         model: str) -> None:
        """Publishes the next attempt for the batcher (deduplicated by its attempt, so a
        repeat stores nothing new), then the task is done here."""
        *earlier, refused = rerouted.history
        try:
            stored = await self.claims.fallback_params(task, model)
        except PayloadMissing as exc:  # its params went past the bucket's max age meanwhile
            # Final here; the refused call was billed, so its result and budget count it.
            billed = task.model_copy(update={"prior_cost": add_cost(task.prior_cost,
                                                                    refused.cost)})
            await self._finish(msg, billed, realtime_result(
                billed, "errored", rerouted.attempt, self.accounting.prices,
                error=ErrorInfo(type="payload_missing", message=str(exc))), key)
            return
        await publish_accepted(self.js, fallback_task(task, refused, model, earlier, stored))
        await self.markers.put(key, CallMarker(
            state="done", attempt=rerouted.attempt).model_dump_json().encode())
        await msg.ack()

    async def _exhausted(self, msg: Msg, task: AcceptedTask, key: str, history: list[Attempt],
                         attempts: int) -> None:
        last = history[-1] if history else None
        error = ErrorInfo(type=last.outcome if last else "api_error",
                          message=last.message if last else "no attempt left")
        final = realtime_result(task, "errored", attempts, self.accounting.prices, error=error)
        if await self._finish(msg, task, final, key, keep_params=True):
            await publish_dead_letter(self.js, task, [*task.history, *history], final)
            self.accounting.dead_letter()

    async def _finish(self, msg: Msg, task: AcceptedTask, final: Result, key: str,
                      keep_params: bool = False) -> bool:
        """Stores the final result (its answer apart when too large for one message), deletes
        the task's stored params unless `keep_params` (a dead letter's), marks the task done
        and acks; False for a replay. What it spent is counted from `final` itself."""
        stored = await publish_result(self.js, await self.claims.result(final),
                                      subjects.result_msg_id(task.tenant, task.task_id),
                                      task.webhook)
        if stored:
            self.accounting.final(final, str(task.params.get("model")), task.published_at,
                                  task.prior_cost)
            if self.budgets is not None:  # newly stored: a replay never settles twice
                spent = spent_usd(self.accounting.prices, str(task.params.get("model")),
                                  (final.message or {}).get("usage"), realtime=True)
                self.accounting.settlement(await self.budgets.settle_final(
                    task.tenant, task.reservation, with_prior_usd(spent, task.prior_cost)))
        if not keep_params:  # a replay too: it may follow a crash before the delete
            await self.claims.release(task.tenant, task.params_object)
        await self.markers.put(key, CallMarker(
            state="done", attempt=final.attempts).model_dump_json().encode())
        await msg.ack()
        return stored

    async def _call(self, params: dict[str, Any], betas: list[str]) -> dict[str, Any]:
        # A plain POST of the task's params, so every field the API accepts passes untouched;
        # its betas as the header the SDK's `betas=` sends.
        reply = await self.client.post("/v1/messages", cast_to=object, body=params,
                                       options={"headers": beta_headers(betas)})
        if not isinstance(reply, dict):
            raise UnexpectedReply(f"the API answered with {type(reply).__name__}, not a message")
        return reply

    async def _marker(self, key: str) -> tuple[CallMarker | None, int]:
        try:
            entry = await self.markers.get(key)
        except NotFoundError:  # absent, or aged out with its task id
            return None, 0
        return CallMarker.model_validate_json(entry.value or b""), entry.revision or 0

    async def _mark(self, key: str, marker: CallMarker, revision: int) -> int | None:
        """Writes `marker` if the key is still at `revision` (0: absent); None if it is not."""
        value = marker.model_dump_json().encode()
        try:
            if revision == 0:
                return await self.markers.create(key, value)
            return await self.markers.update(key, value, last=revision)
        except KeyWrongLastSequenceError:
            return None

    async def _has_result(self, task: AcceptedTask) -> bool:
        with contextlib.suppress(NotFoundError):
            await self.js.get_last_msg(subjects.STREAM_RESULTS,
                                       subjects.results(task.tenant, task.task_id))
            return True
        return False

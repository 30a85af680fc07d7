"""Every JetStream publish batchbus makes, each with a deterministic Nats-Msg-Id."""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import Header, PubAck
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError
from pydantic import BaseModel
from pydantic_core import from_json, to_json

from batchbus.shared import budgets, subjects
from batchbus.shared.models import (
    AcceptedTask,
    Attempt,
    BatchEvent,
    Cost,
    DeadLetter,
    ErrorInfo,
    Reservation,
    Result,
    Status,
    Usage,
)

ACK_TIMEOUT = 10.0  # seconds; publish_async's future has no timeout of its own
NO_RESPONDERS = "503"


@dataclass(frozen=True)
class Outgoing:
    """One message to store: where, and under which Nats-Msg-Id."""

    subject: str
    body: BaseModel
    stream: str
    msg_id: str
    headers: dict[str, str] | None = None

    def raw(self) -> "Raw":
        return Raw(self.subject, to_json(self.body), self.stream,
                   {**(self.headers or {}), subjects.MSG_ID: self.msg_id})


@dataclass(frozen=True)
class Raw:
    """A message as published: ready bytes and every header but Nats-Expected-Stream."""

    subject: str
    payload: bytes
    stream: str
    headers: dict[str, str]


def result_raw(tenant: str, task_id: str, payload: bytes, msg_id: str,
               webhook: str | None = None) -> Raw:
    """A task's final result as published (its JSON ready): the one place for its subject,
    stream and headers. `webhook` names the tenant's endpoint the notifier then POSTs the
    stored result to."""
    headers = {subjects.WEBHOOK_HEADER: webhook} if webhook else {}
    headers[subjects.MSG_ID] = msg_id
    return Raw(subjects.results(tenant, task_id), payload, subjects.STREAM_RESULTS, headers)


def result_message(result: Result, msg_id: str, webhook: str | None = None) -> Raw:
    return result_raw(result.tenant, result.task_id, to_json(result), msg_id, webhook)


def accepted_message(task: AcceptedTask) -> Outgoing:
    """A task attempt for the batcher (from intake, or as a retry from the notifier)."""
    return Outgoing(subjects.accepted(task.tenant), task, subjects.STREAM_INTERNAL,
                    subjects.accepted_msg_id(task.tenant, task.task_id, task.attempt))


def realtime_message(task: AcceptedTask) -> Outgoing:
    """A task for the notifier's real-time worker (from intake)."""
    return Outgoing(subjects.realtime(task.tenant), task, subjects.STREAM_INTERNAL,
                    subjects.realtime_msg_id(task.tenant, task.task_id))


async def publish(js: JetStreamContext, subject: str, body: BaseModel, stream: str,
                  msg_id: str, headers: dict[str, str] | None = None) -> PubAck:
    """Stores `body` and waits for the stream's acknowledgement."""
    return await send(js, Outgoing(subject, body, stream, msg_id, headers))


async def send(js: JetStreamContext, message: Outgoing | Raw) -> PubAck:
    """Stores one message and waits for its acknowledgement. publish_async costs a fraction
    of the CPU of `js.publish` (no inbox per request), and concurrent callers share round
    trips."""
    raw = message.raw() if isinstance(message, Outgoing) else message
    future = await js.publish_async(raw.subject, raw.payload, stream=raw.stream,
                                    headers=raw.headers)
    return await asyncio.wait_for(future, ACK_TIMEOUT)


async def publish_result(js: JetStreamContext, result: Result, msg_id: str,
                         webhook: str | None = None) -> bool:
    """Stores the task's final result; returns False when the stream already had it."""
    return not (await send(js, result_message(result, msg_id, webhook))).duplicate


async def publish_canceled(js: JetStreamContext, tenant: str, task_id: str,
                           metadata: dict[str, object], attempts: int,
                           batch_id: str | None = None, usage: Usage | None = None,
                           webhook: str | None = None,
                           reservation: Reservation | None = None,
                           warnings: Sequence[str] = (),
                           prior_cost: Cost | None = None) -> bool:
    """The task's final `canceled` result; False if it already had a final result."""
    return await publish_unsent(js, tenant, task_id, metadata, attempts,
                                ErrorInfo(type="canceled", message="canceled at the owner's request"),
                                batch_id, usage, webhook, reservation, warnings, prior_cost)


async def publish_unsent(js: JetStreamContext, tenant: str, task_id: str,
                         metadata: dict[str, object], attempts: int, error: ErrorInfo,
                         batch_id: str | None = None, usage: Usage | None = None,
                         webhook: str | None = None, reservation: Reservation | None = None,
                         warnings: Sequence[str] = (), prior_cost: Cost | None = None) -> bool:
    """The final result of a task whose attempt never ran: `canceled`, or `errored` with
    `error` (its stored params gone); False if it already had a final result.

    Such a task settles its budget `reservation` with what its earlier attempts cost
    (`prior_cost`: a refusal before its fallback; none: a release), only when its result is
    newly stored, so a repeat never settles twice.
    """
    status: Status = "canceled" if error.type == "canceled" else "errored"
    result = Result(task_id=task_id, tenant=tenant, status=status, batch_id=batch_id,
                    route="batch" if batch_id else None, attempts=attempts, usage=usage,
                    cost=prior_cost, metadata=metadata, warnings=list(warnings), error=error)
    if not await publish_result(js, result, subjects.result_msg_id(tenant, task_id), webhook):
        return False
    if usage is None:
        await budgets.release(js, tenant, reservation,
                              prior_cost.spent_usd if prior_cost else budgets.ZERO)
    return True


async def has_result(js: JetStreamContext, tenant: str, task_id: str) -> bool:
    """Whether the task's final result is stored (results are kept for the results stream's
    max age: an older one is not found)."""
    try:
        await js.get_last_msg(subjects.STREAM_RESULTS, subjects.results(tenant, task_id))
    except NotFoundError:
        return False
    return True


async def publish_dead_letter(js: JetStreamContext, task: AcceptedTask, history: list[Attempt],
                              final: Result) -> None:
    """Records a task that used up its attempts, with its history and final result; once per
    task (the result's message id). Stored params stay for it, named, until the bucket's
    max age."""
    letter = DeadLetter(tenant=task.tenant, task_id=task.task_id, params=task.params,
                        metadata=task.metadata, history=history, result=final,
                        params_object=task.params_object)
    await publish(js, subjects.dead_letters(task.tenant), letter, subjects.STREAM_DEAD_LETTERS,
                  subjects.result_msg_id(task.tenant, task.task_id))


async def publish_accepted(js: JetStreamContext, task: AcceptedTask) -> bool:
    """Hands a task attempt to the batcher; False when the stream already had it."""
    return not (await send(js, accepted_message(task))).duplicate


async def publish_event(js: JetStreamContext, event: BatchEvent, tenants: Sequence[str],
                        detail: str = "") -> None:
    """The batch's event, and a copy for each tenant with tasks in the batch."""
    msg_id = subjects.event_msg_id(event.batch_id, event.event, detail)
    await asyncio.gather(
        publish(js, subjects.batch_events(event.batch_id), event, subjects.STREAM_EVENTS,
                msg_id),
        *(publish(js, subjects.tenant_batch_events(event.batch_id, tenant), event,
                  subjects.STREAM_EVENTS, f"{msg_id}:{tenant}") for tenant in tenants))


class PubAcks:
    """JetStream publishes sent back to back, their acknowledgements awaited together.

    What nats-py's publish_async does, except that an error reply fails its future: nats-py
    2.16 raises the error inside its reply callback, so the future of a refused publish (a
    KV create of a key that exists) never resolved. One reply subscription per instance.
    """

    def __init__(self, js: JetStreamContext) -> None:
        self.nc: Client = js._nc  # the connection the JetStream context publishes on
        self._prefix: str | None = None
        self._starting = asyncio.Lock()
        self._tokens = count()
        self._waiting: dict[str, asyncio.Future[PubAck]] = {}

    async def send(self, subject: str, payload: bytes, stream: str,
                   headers: dict[str, str]) -> "asyncio.Future[PubAck]":
        """Publishes now; the future holds the PubAck, or the error the stream answered."""
        prefix = self._prefix or await self._start()
        token = str(next(self._tokens))
        future: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            await self.nc.publish(subject, payload, reply=prefix + token,
                                  headers={**headers, Header.EXPECTED_STREAM: stream})
        except BaseException:
            del self._waiting[token]
            raise
        return future

    async def store(self, messages: Sequence[Outgoing | Raw]) -> list[PubAck | BaseException]:
        """Publishes every message, then waits for all their acknowledgements at once; each
        outcome is the message's PubAck or its own error (a failed send included)."""
        futures: list[asyncio.Future[PubAck]] = []
        for message in messages:
            raw = message.raw() if isinstance(message, Outgoing) else message
            try:
                futures.append(await self.send(raw.subject, raw.payload, raw.stream,
                                               raw.headers))
            except Exception as exc:  # the connection failed: this message fails
                failed: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
                failed.set_exception(exc)
                futures.append(failed)
        return await self.wait(futures)

    async def wait(self, futures: Sequence["asyncio.Future[PubAck]"],
                   timeout: float = ACK_TIMEOUT) -> list[PubAck | BaseException]:
        """Each future's PubAck or error, in order; TimeoutError for those unanswered."""
        if futures:
            await asyncio.wait(futures, timeout=timeout)
        outcomes: list[PubAck | BaseException] = []
        for future in futures:
            if not future.done():
                future.cancel()  # its late reply finds no one waiting
                outcomes.append(TimeoutError("no JetStream acknowledgement in time"))
            else:
                outcomes.append(future.exception() or future.result())
        if any(f.cancelled() for f in futures):  # rare: forget the unanswered
            self._waiting = {t: f for t, f in self._waiting.items() if not f.done()}
        return outcomes

    async def _start(self) -> str:
        async with self._starting:
            if self._prefix is None:
                prefix = self.nc.new_inbox() + "."
                await self.nc.subscribe(prefix + "*", cb=self._reply)
                self._prefix = prefix
            return self._prefix

    async def _reply(self, msg: Msg) -> None:
        assert self._prefix is not None
        future = self._waiting.pop(msg.subject[len(self._prefix):], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS:
            future.set_exception(NoStreamResponseError())
            return
        try:
            answer = from_json(msg.data)
            if "error" in answer:
                future.set_exception(APIError(**answer["error"]))
            else:  # built directly: PubAck.from_response walks the dataclass's fields
                future.set_result(PubAck(stream=answer["stream"], seq=answer["seq"],
                                         domain=answer.get("domain"),
                                         duplicate=answer.get("duplicate")))
        except (ValueError, TypeError, KeyError) as exc:  # not a JetStream answer
            future.set_exception(exc)

"""A small Python client: publish tasks durably, submit them and wait for their final results,
and replay a tenant's stored results. Params and answers too large for one NATS message go
through the tenant's payload bucket both ways, unseen (docs/payloads.md)."""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from batchbus.outgoing import Outgoing, outgoing
from batchbus.shared import connection, subjects
from batchbus.shared.consumer import ephemeral, next_message, queued, stored
from batchbus.shared.models import Result, Task, parse_json
from batchbus.shared.payloads import PayloadMissing, Payloads
from batchbus.shared.settings import NatsSettings

TaskLike = Task | dict[str, Any]

log = logging.getLogger("batchbus.client")


class BatchbusClient:
    """`async with BatchbusClient(url, tenant) as c: result = await c.submit(task)`.

    Holds no global state and installs no signal handlers, so a web app may open one per
    background job, or share its own NATS connection with `BatchbusClient.over(nc, tenant)`.
    """

    def __init__(self, nats_url: str, tenant: str, *, nats_settings: NatsSettings | None = None,
                 **connect_options: Any) -> None:
        """Args:
            nats_url: NATS server(s), comma separated.
            tenant: the tenant token; tasks go to `batchbus.tasks.<tenant>`.
            nats_settings: user, password and TLS files to connect with (say
                `NatsSettings(user="acme", password=..., tls_ca="ca.pem")`); its url is
                not used.
            connect_options: passed to `nats.connect` (say `max_reconnect_attempts`); they
                win over `nats_settings`.

        The payload bucket this client may create (its first task too large for a message)
        keeps objects `nats_settings.payloads_max_age_seconds` (else the environment's
        NATS_PAYLOADS_MAX_AGE_SECONDS, 8 days).
        """
        if not subjects.is_token(tenant):
            raise ValueError(f"tenant must match {subjects.TOKEN_PATTERN}")
        self.nats_url = nats_url
        self.tenant = tenant
        # Replies (PubAcks, fetches) come to _INBOX_<tenant>.>, the one inbox a tenant's
        # NATS user may read (deploy/nats/accounts.conf).
        self._connect_options = {"inbox_prefix": f"_INBOX_{tenant}", "error_cb": _log_error,
                                 **(connection.connect_options(nats_settings) if nats_settings
                                    else {}),
                                 **connect_options}
        self._nats_settings = nats_settings
        self._nc: Client | None = None
        self._owns_connection = True
        self._payloads: Payloads | None = None  # opened on first use, on this connection

    @classmethod
    def over(cls, nc: Client, tenant: str) -> "BatchbusClient":
        """A client on a connection the caller owns; leaving `async with` does not close it."""
        client = cls("", tenant)
        client._nc, client._owns_connection = nc, False
        return client

    async def __aenter__(self) -> "BatchbusClient":
        if self._nc is None:
            self._nc = await nats.connect(self.nats_url.split(","), name=f"client-{self.tenant}",
                                          **self._connect_options)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._nc is not None and self._owns_connection:
            # Every publish has its PubAck by now, so there is nothing to drain; a drain would
            # wait (30 s) for messages buffered for a subscription the caller stopped reading,
            # as breaking out of `results()` leaves one until the generator is collected.
            await self._nc.close()
            self._nc = None
        self._payloads = None

    @property
    def nc(self) -> Client:
        assert self._nc is not None, "use `async with`"
        return self._nc

    async def publish(self, task: Task | dict[str, Any] | bytes) -> None:
        """Returns once JetStream has stored the task (its PubAck).

        A task too large for one NATS message has its params stored in the tenant's payload
        bucket first, and goes out naming them (`params_object`). Raises ValueError, and
        publishes nothing, when its params are over the Messages API's 32 MiB. Bytes are
        published as they are.
        """
        await self._publish(Outgoing(task) if isinstance(task, bytes) else task)

    async def cancel(self, task_id: str) -> None:
        """Asks batchbus to cancel a task that has not ended; its result becomes `canceled`."""
        await self.nc.jetstream().publish(subjects.cancel(self.tenant),
                                          json.dumps({"task_id": task_id}).encode(),
                                          stream=subjects.STREAM_CANCELS)

    async def publish_many(self, tasks: Iterable[Task | dict[str, Any]],
                           window: int = 256) -> int:
        """Publishes with up to `window` PubAcks outstanding; returns the count. A task that
        cannot be sent (see `publish`) raises when its turn comes: the ones before it are
        published (submit_many checks them all first)."""
        return await self._publish_all(tasks, window)

    async def _publish_all(self, items: Iterable[TaskLike | Outgoing], window: int) -> int:
        pending: set[asyncio.Task[None]] = set()
        count = 0
        try:
            for item in items:
                pending.add(asyncio.create_task(self._publish(item)))
                count += 1
                if len(pending) >= window:
                    done, pending = await asyncio.wait(pending,
                                                       return_when=asyncio.FIRST_COMPLETED)
                    _raise_first(done)
            if pending:
                done, pending = await asyncio.wait(pending)
                _raise_first(done)
        finally:
            for unfinished in pending:  # after a failure or a cancel, leave nothing running
                unfinished.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return count

    async def _publish(self, item: TaskLike | Outgoing) -> None:
        if not isinstance(item, Outgoing):
            task = item if isinstance(item, Task) else Task.model_validate(item)
            item = outgoing(task, self.nc.max_payload)
        if item.stored is not None:  # the params the task names, stored before it is sent
            await self._payload_store.put(self.tenant, *item.stored)
        await self.nc.jetstream().publish(subjects.tasks(self.tenant), item.data,
                                          stream=subjects.STREAM_TASKS)

    @property
    def _payload_store(self) -> Payloads:
        """The payload buckets on this client's connection (this tenant's is the one it may
        use): where params and answers too large for one message are kept."""
        if self._payloads is None:
            settings = self._nats_settings or NatsSettings()
            self._payloads = Payloads(self.nc.jetstream(), settings.payloads_max_age_seconds,
                                      settings.replicas)
        return self._payloads

    async def with_answer(self, result: Result) -> Result:
        """`result` with its `message` read back when the answer is stored apart
        (`message_object`, kept set); every Result this client yields has had this done. For
        results read elsewhere (a webhook, your own subscription) of this client's tenant.

        A missing object (past the bucket's max age, say) leaves the message null with a
        logged warning: one lost answer must not end an iteration."""
        if result.message_object is None or result.message is not None:
            return result
        try:
            data = await self._payload_store.read(self.tenant, result.message_object)
        except PayloadMissing as exc:
            log.warning("the answer of task %s is not readable, its message is left null: %s",
                        result.task_id, exc)
            return result
        return result.model_copy(update={"message": parse_json(data)})

    async def submit(self, task: TaskLike) -> Result:
        """Publishes `task` and returns its final result, which may take as long as a batch
        does (up to 24 hours): bound it with `asyncio.timeout` if you need to.

        A task that already has a final result is not published again; that result is
        returned at once.
        """
        async with contextlib.aclosing(self.submit_many([task])) as results:
            async for result in results:
                return result
        raise AssertionError("submit_many ended without a result")

    async def submit_many(self, tasks: Iterable[TaskLike],
                          window: int = 256) -> AsyncGenerator[Result, None]:
        """Publishes `tasks` and yields each one's final result as it arrives, until every
        task has one. Tasks that already have a final result are not published again; their
        stored results come first. Raises ValueError before publishing anything if a task
        id is not a valid token or appears twice, or a task cannot be sent (see `publish`).
        """
        wanted = self._by_subject(tasks)
        if not wanted:
            return
        js = self.nc.jetstream()
        # A rejection names the task message it rejects; one stored before this sequence
        # answers an earlier publish (the task was fixed since), not ours.
        tasks_before = (await js.stream_info(subjects.STREAM_TASKS)).state.last_seq
        only = next(iter(wanted)) if len(wanted) == 1 else subjects.results_of(self.tenant)
        # Subscribed before the look-up and the publish, so no result can fall between them.
        sub = await js.subscribe(only, stream=subjects.STREAM_RESULTS, ordered_consumer=True,
                                 config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW))
        publisher: asyncio.Task[int] | None = None
        try:
            stored = await self._stored(js, list(wanted), tasks_before, window)
            publisher = asyncio.create_task(self._publish_all(
                [task for subject, task in wanted.items() if subject not in stored], window))
            for subject, result in stored.items():
                del wanted[subject]
                yield await self.with_answer(result)
            while wanted:
                msg = await _next_or_failure(sub, publisher)
                if msg.subject in wanted and _answers(msg.data, msg.headers, self.tenant,
                                                      tasks_before):
                    del wanted[msg.subject]
                    yield await self.with_answer(Result.model_validate_json(msg.data))
            await publisher  # every task is answered; surfaces nothing but its own error
        finally:
            if publisher is not None and not publisher.done():
                publisher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publisher
            with contextlib.suppress(nats.errors.Error):  # the connection may be draining
                await sub.unsubscribe()

    async def history(self, since: datetime | None = None) -> AsyncIterator[Result]:
        """This tenant's stored final results (all, or stored since `since`), oldest first;
        ends once it has read every result stored when it started."""
        async for result in replay(self.nc.jetstream(), subjects.results_of(self.tenant), since):
            yield await self.with_answer(result)

    async def results(self, idle_timeout: float | None = None) -> AsyncIterator[Result]:
        """Every stored final result of this tenant, oldest first, then new ones as they come.

        Stops after `idle_timeout` seconds without a new result (None: never).
        """
        js = self.nc.jetstream()
        sub = await js.subscribe(subjects.results_of(self.tenant), stream=subjects.STREAM_RESULTS,
                                 ordered_consumer=True,
                                 config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        try:
            while True:
                msg = await next_message(sub, idle_timeout or 3600.0)
                if msg is not None:
                    yield await self.with_answer(Result.model_validate_json(msg.data))
                elif idle_timeout is not None:
                    return
        finally:
            with contextlib.suppress(nats.errors.Error):  # the connection may be draining
                await sub.unsubscribe()

    def _by_subject(self, tasks: Iterable[TaskLike]) -> dict[str, Task | Outgoing]:
        """Result subject -> the task's message, checked before anything is published. A task
        whose params go by reference is kept as the Task, planned again when it is sent, so
        the params of many large tasks are not all held encoded at once."""
        wanted: dict[str, Task | Outgoing] = {}
        for item in tasks:
            task = item if isinstance(item, Task) else Task.model_validate(item)
            if not subjects.is_token(task.task_id):
                raise ValueError(f"task_id {task.task_id[:80]!r} must match "
                                 f"{subjects.TOKEN_PATTERN}")
            subject = subjects.results(self.tenant, task.task_id)
            if subject in wanted:
                raise ValueError(f"task_id {task.task_id!r} appears twice")
            planned = outgoing(task, self.nc.max_payload)  # raises for a task too large
            wanted[subject] = planned if planned.stored is None else task
        return wanted

    async def _stored(self, js: JetStreamContext, wanted: list[str], tasks_before: int,
                      window: int) -> dict[str, Result]:
        """The final results already stored for these subjects, looked up `window` at a time."""
        found: dict[str, Result] = {}
        for start in range(0, len(wanted), window):
            chunk = wanted[start:start + window]
            answers = await asyncio.gather(*(self._stored_one(js, s, tasks_before) for s in chunk))
            found.update((s, r) for s, r in zip(chunk, answers, strict=True) if r is not None)
        return found

    async def _stored_one(self, js: JetStreamContext, subject: str,
                          tasks_before: int) -> Result | None:
        try:
            last = await js.get_last_msg(subjects.STREAM_RESULTS, subject)
        except NotFoundError:
            return None
        if _answers(last.data or b"", last.headers, self.tenant, tasks_before):
            return Result.model_validate_json(last.data or b"")
        # The last one is a stale rejection (say of a malformed copy sent after the task
        # succeeded); an earlier final result still answers the task.
        seq = 1
        while True:
            try:
                msg = await js.get_msg(subjects.STREAM_RESULTS, seq=seq, subject=subject,
                                       next=True)
            except NotFoundError:
                return None
            if msg.seq is None or msg.seq >= (last.seq or 0):
                return None
            if _answers(msg.data or b"", msg.headers, self.tenant, tasks_before):
                return Result.model_validate_json(msg.data or b"")
            seq = msg.seq + 1


def _raise_first(done: set[asyncio.Task[None]]) -> None:
    """Raises the first failure; reading each one's exception marks it retrieved, so none
    prints `Task exception was never retrieved` at exit."""
    first = next((e for task in done if not task.cancelled() and (e := task.exception())), None)
    if first is not None:
        raise first


async def _log_error(exc: Exception) -> None:
    """nats-py's default prints a traceback for each error it recovers from itself (a
    reconnect, an ordered consumer re-created after a missed heartbeat): one line instead."""
    log.warning("nats: %s: %s", type(exc).__name__, exc)


def _answers(data: bytes, headers: dict[str, str] | None, tenant: str, tasks_before: int) -> bool:
    """True when a stored result is the final answer for a task we are about to publish:
    any result but a rejection, or a rejection of a task message published after
    `tasks_before` (its Nats-Msg-Id carries that message's stream sequence)."""
    if json.loads(data).get("status") != "rejected":
        return True
    msg_id = (headers or {}).get(subjects.MSG_ID, "")
    seq = msg_id.rpartition(":")[2]
    return seq.isdigit() and msg_id == subjects.rejected_msg_id(tenant, int(seq)) \
        and int(seq) > tasks_before


async def _next_or_failure(sub: JetStreamContext.PushSubscription,
                           publisher: asyncio.Task[int]) -> Msg:
    """The next message; raises the publisher's error instead if publishing fails first."""
    if (msg := queued(sub)) is not None:  # most often, without a task to wait in
        return msg
    if publisher.done():
        publisher.result()
        return await sub.next_msg(timeout=None)
    receiving = asyncio.ensure_future(sub.next_msg(timeout=None))
    try:
        await asyncio.wait({receiving, publisher}, return_when=asyncio.FIRST_COMPLETED)
        if not receiving.done():
            publisher.result()  # raises if publishing failed
            return await receiving
        return receiving.result()
    finally:
        if not receiving.done():
            receiving.cancel()


async def replay(js: JetStreamContext, subject: str, since: datetime | None = None
                 ) -> AsyncIterator[Result]:
    """The results stored on `subject` (a filter such as `batchbus.results.<tenant>.>`),
    from `since` or from the start, oldest first; ends once it has read every one that was
    stored when it started."""
    async with ephemeral(js, subject, subjects.STREAM_RESULTS, since) as psub:
        async for msgs in stored(psub):
            for msg in msgs:
                yield Result.model_validate_json(msg.data)

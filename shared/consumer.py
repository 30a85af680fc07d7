"""Durable pull consumers read with nats-py directly.

faststream 0.7.8's batch pull loop catches only `nats.errors.TimeoutError`, but nats-py
2.16 can raise a bare `asyncio.TimeoutError` from `fetch`; the loop then dies and drops the
messages it had collected (unacknowledged until AckWait). Our loops catch both.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from importlib.metadata import version
from time import monotonic

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header
from nats.js.errors import APIError

# fetch and next_message read nats-py's private parts (a subscription's queue and budget, a
# pull subscription's inbox): the versions they were read on, checked here rather than by a
# failure in the middle of a fetch.
NATS_PY_CHECKED = ("2.16.",)
if not version("nats-py").startswith(NATS_PY_CHECKED):
    raise ImportError(f"batchbus reads internals of nats-py 2.16 and found {version('nats-py')}: "
                      "pip install 'nats-py>=2.16,<2.17'")

HEARTBEAT = "100"
ENDS_REQUEST = frozenset({"404", "408", "409"})  # no messages, request expired, conflict


@asynccontextmanager
async def pull(js: JetStreamContext, subject: str, durable: str, stream: str,
               config: ConsumerConfig) -> AsyncIterator[JetStreamContext.PullSubscription]:
    """Creates the durable pull consumer, or updates it to `config` (nats-py's pull_subscribe
    would keep an existing consumer's old ack_wait and limits), and binds to it. Unsubscribes
    on exit so that a shutdown's connection drain does not wait for an abandoned fetch."""
    config.name = config.durable_name = durable
    config.filter_subject = subject
    await js.add_consumer(stream, config=config)
    psub = await js.pull_subscribe_bind(durable=durable, stream=stream)
    try:
        yield psub
    finally:
        with suppress(nats.errors.Error):
            await psub.unsubscribe()


@asynccontextmanager
async def ephemeral(js: JetStreamContext, subject: str, stream: str,
                    start: datetime | int | None = None
                    ) -> AsyncIterator[JetStreamContext.PullSubscription]:
    """A replay consumer: unacknowledged, in memory, from `start` (a time, the stream seq
    after which to begin, or None for the beginning); deleted on exit, and dropped by the
    server after a minute if we vanish. A pull consumer rather than an ordered push one:
    before its first fetch it delivers nothing, so `num_pending` says exactly what is stored."""
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, mem_storage=True, num_replicas=1,
                            inactive_threshold=60.0, deliver_policy=DeliverPolicy.ALL)
    if isinstance(start, datetime):
        config.deliver_policy, config.opt_start_time = DeliverPolicy.BY_START_TIME, start
    elif start is not None:
        config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, start + 1
    psub = await js.pull_subscribe(subject, stream=stream, config=config)
    name = (await psub.consumer_info()).name
    try:
        yield psub
    finally:
        with suppress(nats.errors.Error):
            await psub.unsubscribe()
        with suppress(nats.errors.Error):
            await js.delete_consumer(stream, name)


async def stored(psub: JetStreamContext.PullSubscription, batch: int = 256
                 ) -> AsyncIterator[list[Msg]]:
    """The messages an `ephemeral` consumer had to deliver when this began, in batches,
    oldest first; ends once it has read them all (or they aged out of the stream)."""
    remaining = (await psub.consumer_info()).num_pending or 0
    while remaining > 0:
        msgs = await fetch(psub, min(batch, remaining), timeout=5.0)
        if not msgs:  # messages age out of a stream (max_age): fewer may be left than counted
            remaining = min(remaining, (await psub.consumer_info()).num_pending or 0)
            continue
        yield msgs[:remaining]
        remaining -= len(msgs)


async def fetch(psub: JetStreamContext.PullSubscription, batch: int, timeout: float) -> list[Msg]:
    """Up to `batch` messages, or none after `timeout` seconds.

    The pull protocol of nats-py's `fetch`: messages left from an earlier request first,
    then a no-wait request for what is stored now, and only if that finds nothing, one
    request that waits for the next message (one only: a request still open when we return
    would deliver messages that then wait, their ack timers running, until the next call).
    But delivered messages are taken from the subscription's queue as they are, where
    nats-py awaits each one in a task with a timer of its own: about 20 µs of CPU per
    message, a quarter of what intake spent on a task.
    """
    sub = psub._sub  # the subscription nats-py delivers this consumer's messages to
    msgs = _queued(sub, batch)
    if len(msgs) == batch:
        return msgs
    deadline = monotonic() + timeout
    await _request(psub, {"batch": batch - len(msgs), "no_wait": True})
    while len(msgs) < batch:  # until the request's end: its status, or the batch filled
        msg = await _next(sub, deadline)
        if msg is None or _status(msg) in ENDS_REQUEST:
            break
        if _status(msg) is None:
            msgs.append(msg)
    if msgs:
        return msgs
    expires = deadline - monotonic() - 0.0001  # ends before we stop waiting for it
    if expires <= 0:
        return []
    await _request(psub, {"batch": 1, "expires": int(expires * 1e9)})
    while (msg := await _next(sub, deadline)) is not None:
        if _status(msg) is None:
            return [msg]
    return []


async def _request(psub: JetStreamContext.PullSubscription, request: dict[str, object]) -> None:
    await psub._nc.publish(psub._nms, json.dumps(request).encode(), psub._deliver)


def _queued(sub: Subscription, limit: int) -> list[Msg]:
    """Messages already delivered, up to `limit`; status messages of earlier requests are
    dropped (a status other than those a request ends with is an error)."""
    msgs: list[Msg] = []
    while len(msgs) < limit and (msg := queued(sub)) is not None:
        if _status(_checked(msg)) is None:
            msgs.append(msg)
    return msgs


async def _next(sub: Subscription, deadline: float) -> Msg | None:
    """The next delivered message or status, or None at the deadline."""
    msg = await next_message(sub, deadline - monotonic())
    return None if msg is None else _checked(msg)


def queued(sub: Subscription) -> Msg | None:
    """The subscription's next message if it has been delivered already, else None."""
    if sub._pending_queue.empty():
        return None
    return _taken(sub, sub._pending_queue.get_nowait())


async def next_message(sub: Subscription, timeout: float) -> Msg | None:
    """The subscription's next message, or None after `timeout` seconds: nats-py's
    next_msg without the task and timer it makes for each message (~20 µs of CPU), which
    a subscriber reading thousands of results a second would pay for every one."""
    deadline = monotonic() + timeout
    while (msg := queued(sub)) is None:
        if sub._conn.is_closed:
            raise nats.errors.ConnectionClosedError
        left = deadline - monotonic()
        if left <= 0:
            return None
        try:  # a closed connection delivers nothing: look again each second
            return _taken(sub, await asyncio.wait_for(sub._pending_queue.get(), min(left, 1.0)))
        except TimeoutError:
            pass
    return msg


def _taken(sub: Subscription, msg: Msg) -> Msg:
    sub._pending_size -= len(msg.data)  # what nats-py's next_msg does: frees the budget
    return msg


def _checked(msg: Msg) -> Msg:
    status = _status(msg)
    if status is not None and status != HEARTBEAT and status not in ENDS_REQUEST:
        raise APIError.from_msg(msg)
    return msg


def _status(msg: Msg) -> str | None:
    return msg.headers.get(Header.STATUS) if msg.headers else None

"""The consumer runtime every service loop runs on: fetch with bounded concurrency, handle
each message safely (an error is a delayed nak, never a lost or terminated message), and
keep long handling alive (in_progress) so JetStream does not redeliver it meanwhile.

The pull protocol itself (`pull`, `fetch`) is in shared/consumer.py.
"""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import BaseModel, ValidationError

from batchbus.shared.consumer import fetch

log = logging.getLogger("batchbus")

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Msg], Awaitable[None]]
BatchHandler = Callable[[list[Msg]], Awaitable[None]]
# Seconds a fetch waits for the first message: how often an idle loop looks up (one comes
# back at once). Each look is two requests to the server, the idle cost of every consumer.
FETCH_TIMEOUT = 5.0


async def readable(msg: Msg, model: type[M], what: str) -> M | None:
    """The message's body as `model`; None for one that cannot be read, which is terminated
    (no redelivery would make it readable) and logged."""
    try:
        return model.model_validate_json(msg.data)
    except ValidationError:
        log.error("unreadable %s at %s seq %s; terminating it", what, msg.subject[:120], _seq(msg))
        await msg.term()
        return None


async def handle_safely(msg: Msg, handler: Handler, retry_delay: float) -> None:
    """Runs `handler`; if it raises, the message is nak'ed with `retry_delay` (never dropped,
    never terminated) and the error logged. A nak that fails is left to ack_wait."""
    try:
        await handler(msg)
    except Exception:
        log.exception("message at %s seq %s failed; retrying in %.1fs", msg.subject[:120],
                      _seq(msg), retry_delay)
        with contextlib.suppress(Exception):
            await msg.nak(delay=retry_delay)


async def serve_each(psub: JetStreamContext.PullSubscription, handler: Handler, *,
                     at_once: int, retry_delay: float, grace: float = 0.0) -> None:
    """A service loop: fetches as many messages as there are free slots and handles each
    in a task of its own, at most `at_once` at a time, each through `handle_safely`.

    On stop, handlers still running get `grace` seconds to finish, then are cancelled;
    their messages, unacknowledged, come back after ack_wait.
    """
    running: set[asyncio.Task[None]] = set()
    try:
        while True:
            free = at_once - len(running)
            if free <= 0:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                continue
            for msg in await fetch(psub, free, timeout=FETCH_TIMEOUT):
                work = asyncio.create_task(handle_safely(msg, handler, retry_delay))
                running.add(work)
                work.add_done_callback(running.discard)
    finally:
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        for work in list(running):
            work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*running, return_exceptions=True)


async def serve_batches(psub: JetStreamContext.PullSubscription, handler: BatchHandler, *,
                        batch: int, at_once: int) -> None:
    """A service loop: handles fetched batches while the next fetch is on its way, `at_once`
    batches at a time, so that neither a fetch's round trip nor a batch's wait for its
    PubAcks leaves the service idle. At most `at_once + 1` batches are in hand: size the
    consumer's max_ack_pending for `(at_once + 2) * batch`. `handler` acks its own messages
    and handles its own errors (a batch's messages are not nak'ed here)."""
    handling: deque[asyncio.Future[None]] = deque()
    try:
        while True:
            msgs = await fetch(psub, batch, timeout=FETCH_TIMEOUT)
            while handling and (len(handling) >= at_once or handling[0].done()):
                await handling.popleft()
            if msgs:
                handling.append(asyncio.ensure_future(handler(msgs)))
    except asyncio.CancelledError:
        for work in handling:  # stopping: the unacked come back after ack_wait
            work.cancel()
        raise
    finally:  # a failed fetch lets the batches in hand finish
        await asyncio.gather(*handling, return_exceptions=True)


@contextlib.asynccontextmanager
async def kept_alive(beat: Callable[[], Awaitable[object]], every: float) -> AsyncIterator[None]:
    """Calls `beat` every `every` seconds while the block runs: a message's `in_progress`,
    so that handling longer than ack_wait is not redelivered to another replica meanwhile.
    A beat that returns False stops the beating (the messages are no longer ours); one
    that raises is logged and the next is tried."""
    async def beating() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                if await beat() is False:
                    return
            except Exception as exc:
                log.warning("keep-alive failed (%r); trying again in %.1fs", exc, every)

    task = asyncio.create_task(beating())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _seq(msg: Msg) -> int | str:
    try:
        return msg.metadata.sequence.stream
    except Exception:  # not a JetStream message
        return "?"

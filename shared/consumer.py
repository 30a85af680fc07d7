"""Durable pull consumers read with nats-py directly.

faststream 0.7.8's batch pull loop catches only `nats.errors.TimeoutError`, but nats-py
2.16 can raise a bare `asyncio.TimeoutError` from `fetch`; the loop then dies and drops the
messages it had collected (unacknowledged until AckWait). Our loops catch both.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig


@asynccontextmanager
async def pull(js: JetStreamContext, subject: str, durable: str, stream: str,
               config: ConsumerConfig) -> AsyncIterator[JetStreamContext.PullSubscription]:
    """Binds to (or creates) a durable pull consumer; unsubscribes on exit so that a
    shutdown's connection drain does not wait for an abandoned fetch."""
    psub = await js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
    try:
        yield psub
    finally:
        with suppress(nats.errors.Error):
            await psub.unsubscribe()


async def fetch(psub: JetStreamContext.PullSubscription, batch: int, timeout: float) -> list[Msg]:
    """Up to `batch` messages, or none after `timeout` seconds."""
    try:
        return await psub.fetch(batch=batch, timeout=timeout)
    except TimeoutError:  # both nats.errors.TimeoutError and asyncio's
        return []

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


async def fetch(psub: JetStreamContext.PullSubscription, batch: int, timeout: float) -> list[Msg]:
    """Up to `batch` messages, or none after `timeout` seconds."""
    try:
        return await psub.fetch(batch=batch, timeout=timeout)
    except TimeoutError:  # both nats.errors.TimeoutError and asyncio's
        return []

"""Durable pull consumers read with nats-py directly.

faststream 0.7.8's batch pull loop catches only `nats.errors.TimeoutError`, but nats-py
2.16 can raise a bare `asyncio.TimeoutError` from `fetch`; the loop then dies and drops the
messages it had collected (unacknowledged until AckWait). Our loops catch both.
"""

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig


async def pull(js: JetStreamContext, subject: str, durable: str, stream: str,
               config: ConsumerConfig) -> JetStreamContext.PullSubscription:
    return await js.pull_subscribe(subject, durable=durable, stream=stream, config=config)


async def fetch(psub: JetStreamContext.PullSubscription, batch: int, timeout: float) -> list[Msg]:
    """Up to `batch` messages, or none after `timeout` seconds."""
    try:
        return await psub.fetch(batch=batch, timeout=timeout)
    except TimeoutError:  # both nats.errors.TimeoutError and asyncio's
        return []

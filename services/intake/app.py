"""The intake service: `python -m batchbus.services.intake`, or
`faststream run --factory batchbus.services.intake.app:build`."""

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from faststream.asgi import AsgiFastStream
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from batchbus.services.intake.batch_history import BatchHistoryFollower
from batchbus.services.intake.handlers import TaskIntake
from batchbus.services.intake.routing import BatchHistory, Router
from batchbus.services.intake.settings import IntakeSettings
from batchbus.services.intake.validation import Limits
from batchbus.shared import consumer, streams, subjects
from batchbus.shared.app import Loop, make_app, run
from batchbus.shared.broker import make_broker
from batchbus.shared.budgets import BudgetGate, Budgets
from batchbus.shared.cancels import Cancels
from batchbus.shared.pricing import default_prices

HANDLING = 2  # fetched batches handled at once: one's CPU work overlaps another's round trips


def build(settings: IntakeSettings | None = None) -> AsgiFastStream:
    settings = settings or IntakeSettings()
    broker, metrics = make_broker("intake", settings.nats)
    endpoints = settings.webhooks.load()  # a bad configuration stops the start, loudly
    budget_limits = settings.budgets_usd()

    async def setup(js: JetStreamContext) -> dict[str, Loop]:
        limits = Limits(allowed_models=settings.models(), max_tokens=settings.max_tokens,
                        max_task_bytes=settings.max_task_bytes,
                        webhooks=endpoints.tenants())
        cancels = Cancels(await streams.cancels_bucket(js, settings.nats))
        await cancels.load()
        history = BatchHistoryFollower(js, BatchHistory())
        await history.load()  # so the first deadlines are judged with the history
        intake = TaskIntake(js, await streams.task_ids_bucket(js, settings.nats), cancels,
                            limits, metrics, Router(history.history, settings.route_policy()),
                            BudgetGate(Budgets(await streams.budgets_bucket(js, settings.nats),
                                               metrics), budget_limits, default_prices()))

        def consume(subject: str, durable: str, stream: str,
                    handler: Callable[[list[Msg]], Awaitable[None]]) -> Loop:
            async def loop() -> None:
                async with consumer.pull(js, subject, durable, stream, ConsumerConfig(
                        ack_wait=30, max_deliver=-1,
                        max_ack_pending=(HANDLING + 2) * settings.fetch_batch)) as psub:
                    await handle_while_fetching(psub, handler)
            return loop

        async def handle_while_fetching(psub: JetStreamContext.PullSubscription,
                                        handler: Callable[[list[Msg]], Awaitable[None]]) -> None:
            """Handles fetched batches while the next fetch is on its way, HANDLING at once,
            so that neither a fetch's round trip nor a batch's wait for its PubAcks leaves
            intake idle: at most HANDLING + 1 batches in hand, within max_ack_pending. A
            message is acked only by the handler of its batch."""
            handling: deque[asyncio.Future[None]] = deque()
            try:
                while True:
                    msgs = await consumer.fetch(psub, settings.fetch_batch, timeout=1.0)
                    while handling and (len(handling) >= HANDLING or handling[0].done()):
                        await handling.popleft()
                    if msgs:
                        handling.append(asyncio.ensure_future(handler(msgs)))
            except asyncio.CancelledError:
                for batch in handling:  # stopping: the unacked come back after ack_wait
                    batch.cancel()
                raise
            finally:  # a failed fetch lets the batches in hand finish
                await asyncio.gather(*handling, return_exceptions=True)

        return {
            "intake": consume(subjects.TASKS_ALL, subjects.DURABLE_INTAKE,
                              subjects.STREAM_TASKS, intake.handle_batch),
            "intake-cancels": consume(subjects.CANCEL_ALL, subjects.DURABLE_INTAKE_CANCELS,
                                      subjects.STREAM_CANCELS, intake.handle_cancels),
            "cancels": cancels.follow,
            "batch-history": history.follow,
        }

    return make_app(broker, metrics, settings.nats, setup)



def main() -> None:
    """`python -m batchbus.services.intake`: reads the environment, serves until stopped."""
    settings = IntakeSettings()
    run(build(settings), settings.http, default_port=9101)

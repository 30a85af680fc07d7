"""The intake service: `python -m services.intake` or `faststream run services.intake.app:app`."""

import asyncio

from faststream.asgi import AsgiFastStream
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from prometheus_client import CollectorRegistry

from services.intake.handlers import TaskIntake
from services.intake.settings import IntakeSettings
from services.intake.validation import Limits
from shared import consumer, streams, subjects
from shared.app import Loop, make_app
from shared.broker import make_broker
from shared.metrics import Metrics


def build(settings: IntakeSettings | None = None) -> AsgiFastStream:
    settings = settings or IntakeSettings()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    broker = make_broker("intake", settings.nats, registry)

    async def setup(js: JetStreamContext) -> dict[str, Loop]:
        limits = Limits(allowed_models=settings.models(), max_tokens=settings.max_tokens,
                        max_task_bytes=settings.max_task_bytes)
        intake = TaskIntake(js, await streams.task_ids_bucket(js, settings.nats), limits,
                            metrics)

        async def accept_tasks() -> None:
            async with consumer.pull(
                    js, subjects.TASKS_ALL, subjects.DURABLE_INTAKE, subjects.STREAM_TASKS,
                    ConsumerConfig(ack_wait=30, max_deliver=-1,
                                   max_ack_pending=4 * settings.fetch_batch)) as psub:
                while True:
                    msgs = await consumer.fetch(psub, settings.fetch_batch, timeout=1.0)
                    await asyncio.gather(*(intake.handle_safely(m) for m in msgs))

        return {"intake": accept_tasks}

    return make_app(broker, registry, settings.nats, setup)


settings = IntakeSettings()
app = build(settings)

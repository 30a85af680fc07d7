"""The intake service: `python -m services.intake` or `faststream run services.intake.app:app`."""

import asyncio

from faststream import AckPolicy
from faststream.asgi import AsgiFastStream
from faststream.nats import ConsumerConfig, JStream, NatsMessage, PullSub
from prometheus_client import CollectorRegistry

from services.intake.handlers import TaskIntake
from services.intake.settings import IntakeSettings
from services.intake.validation import Limits
from shared import streams, subjects
from shared.app import make_app
from shared.broker import make_broker
from shared.metrics import Metrics


def build(settings: IntakeSettings | None = None) -> AsgiFastStream:
    settings = settings or IntakeSettings()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    broker = make_broker("intake", settings.nats, registry)
    state: dict[str, TaskIntake] = {}

    async def raw_bodies(msg: NatsMessage, original: object) -> list[bytes]:
        # Malformed JSON must reach validation, which turns it into a clear rejection.
        return [m.data for m in msg.raw_message]

    @broker.subscriber(
        subjects.TASKS_ALL, stream=JStream(subjects.STREAM_TASKS, declare=False),
        durable=subjects.DURABLE_INTAKE,
        pull_sub=PullSub(batch_size=settings.fetch_batch, timeout=0.2, batch=True),
        config=ConsumerConfig(ack_wait=30, max_ack_pending=10 * settings.fetch_batch),
        ack_policy=AckPolicy.MANUAL, decoder=raw_bodies)
    async def accept_tasks(bodies: list[bytes], msg: NatsMessage) -> None:
        await asyncio.gather(*(state["intake"].handle_safely(raw) for raw in msg.raw_message))

    async def on_startup() -> None:
        js = broker.connection.jetstream()
        await streams.ensure_streams(js, settings.nats)
        task_ids = await streams.task_ids_bucket(js, settings.nats)
        limits = Limits(allowed_models=settings.models(), max_tokens=settings.max_tokens,
                        max_task_bytes=settings.max_task_bytes)
        state["intake"] = TaskIntake(js, task_ids, limits, metrics)

    return make_app(broker, registry, on_startup=[on_startup])


settings = IntakeSettings()
app = build(settings)

"""The notifier service: `python -m services.notifier` or `faststream run services.notifier.app:app`."""

import logging

from faststream import AckPolicy
from faststream.asgi import AsgiFastStream
from faststream.exceptions import NackMessage
from faststream.nats import ConsumerConfig, JStream, NatsMessage, PullSub
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from services.notifier.accounting import Accounting
from services.notifier.delivery import Delivery
from services.notifier.settings import NotifierSettings
from shared import streams, subjects
from shared.anthropic_client import make_client
from shared.app import Loop, make_app
from shared.broker import make_broker
from shared.cancels import Cancels
from shared.metrics import Metrics
from shared.models import BatchEnded
from shared.pricing import default_prices

log = logging.getLogger("batchbus.notifier")

RETRY_DELAY_SECONDS = 5.0


def build(settings: NotifierSettings | None = None) -> AsgiFastStream:
    settings = settings or NotifierSettings()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    broker = make_broker("notifier", settings.nats, registry)
    state: dict[str, Delivery] = {}

    @broker.subscriber(
        subjects.BATCH_ENDED, stream=JStream(subjects.STREAM_INTERNAL, declare=False),
        durable=subjects.DURABLE_NOTIFIER, pull_sub=PullSub(batch_size=1, timeout=1.0),
        config=ConsumerConfig(ack_wait=300, max_deliver=-1),
        ack_policy=AckPolicy.NACK_ON_ERROR)
    async def deliver_results(ended: BatchEnded, msg: NatsMessage) -> None:
        try:
            await state["delivery"].deliver(ended, msg.in_progress)
        except Exception as exc:
            # A plain nak would redeliver at once; wait, and never terminate the handoff.
            log.exception("delivery of batch %s failed; retrying", ended.batch_id)
            raise NackMessage(delay=RETRY_DELAY_SECONDS) from exc

    async def setup(js: JetStreamContext) -> dict[str, Loop]:
        cancels = Cancels(await streams.cancels_bucket(js, settings.nats))
        await cancels.load()
        state["delivery"] = Delivery(
            js, make_client(settings.anthropic),
            await streams.batches_bucket(js, settings.nats),
            await streams.manifests_store(js, settings.nats),
            cancels, settings, Accounting(metrics, default_prices()))
        return {"cancels": cancels.follow}

    return make_app(broker, registry, settings.nats, setup)


settings = NotifierSettings()
app = build(settings)

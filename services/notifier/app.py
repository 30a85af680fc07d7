"""The notifier service: `python -m batchbus.services.notifier`, or
`faststream run --factory batchbus.services.notifier.app:build`."""

import logging

from faststream.asgi import AsgiFastStream
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from pydantic import ValidationError

from batchbus.services.notifier.accounting import Accounting
from batchbus.services.notifier.delivery import Delivery
from batchbus.services.notifier.realtime import RealtimeCalls
from batchbus.services.notifier.settings import NotifierSettings
from batchbus.services.notifier.webhooks import WebhookSender
from batchbus.shared import consumer, streams, subjects
from batchbus.shared.anthropic_client import ApiReachable, make_client
from batchbus.shared.app import Loop, Readiness, make_app, run
from batchbus.shared.broker import make_broker
from batchbus.shared.budgets import Budgets
from batchbus.shared.cancels import Cancels
from batchbus.shared.models import BatchEnded
from batchbus.shared.pricing import default_prices

log = logging.getLogger("batchbus.notifier")

RETRY_DELAY_SECONDS = 5.0


def build(settings: NotifierSettings | None = None) -> AsgiFastStream:
    settings = settings or NotifierSettings()
    readiness = Readiness()
    broker, metrics = make_broker("notifier", settings.nats)
    endpoints = settings.webhooks.load()  # a bad configuration stops the start, loudly

    async def setup(js: JetStreamContext) -> dict[str, Loop]:
        cancels = Cancels(await streams.cancels_bucket(js, settings.nats))
        await cancels.load()
        client = make_client(settings.anthropic)
        readiness.add("api", ApiReachable(client))
        budgets = Budgets(await streams.budgets_bucket(js, settings.nats), metrics)
        accounting = Accounting(metrics, default_prices())
        delivery = Delivery(js, client,
                            await streams.batch_records(js, settings.nats), cancels, settings,
                            accounting, budgets)
        realtime = RealtimeCalls(js, client, await streams.realtime_calls_bucket(js, settings.nats),
                                 cancels, settings, accounting, budgets)

        async def deliver_one(msg: Msg) -> None:
            try:
                ended = BatchEnded.model_validate_json(msg.data)
            except ValidationError:
                log.error("unreadable handoff at seq %s; terminating it",
                          msg.metadata.sequence.stream)
                await msg.term()
                return
            try:
                await delivery.deliver(ended, msg.in_progress)
            except Exception:
                # Never terminate a handoff: wait, and let this or another notifier retry.
                log.exception("delivery of batch %s failed; retrying", ended.batch_id)
                await msg.nak(delay=RETRY_DELAY_SECONDS)
                return
            await msg.ack_sync()

        async def deliver_results() -> None:
            async with consumer.pull(js, subjects.BATCH_ENDED, subjects.DURABLE_NOTIFIER,
                                     subjects.STREAM_INTERNAL, ConsumerConfig(
                                         ack_wait=settings.ack_wait_seconds,
                                         max_deliver=-1)) as psub:
                while True:
                    for msg in await consumer.fetch(psub, 1, timeout=1.0):
                        await deliver_one(msg)

        loops: dict[str, Loop] = {"notifier": deliver_results, "realtime": realtime.run,
                                  "cancels": cancels.follow}
        if len(endpoints):  # none configured: intake rejects every name, so no result has one
            loops["webhooks"] = WebhookSender(js, endpoints, settings, metrics).run
        return loops

    return make_app(broker, metrics, settings.nats, setup, readiness=readiness)



def main() -> None:
    """`python -m batchbus.services.notifier`: reads the environment, serves until stopped."""
    settings = NotifierSettings()
    run(build(settings), settings.http, default_port=9104)

"""The notifier service: `python -m batchbus.services.notifier` (`main`)."""

import logging

from faststream.asgi import AsgiFastStream
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from batchbus.services.notifier.accounting import Accounting
from batchbus.services.notifier.delivery import Delivery
from batchbus.services.notifier.metrics import NotifierMetrics
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
from batchbus.shared.payloads import Payloads
from batchbus.shared.pricing import default_prices
from batchbus.shared.runtime import kept_alive, readable, serve_each
from batchbus.shared.settings import load

log = logging.getLogger("batchbus.notifier")

RETRY_DELAY_SECONDS = 5.0


def build(settings: NotifierSettings | None = None) -> AsgiFastStream:
    settings = settings or NotifierSettings()
    readiness = Readiness()
    broker, metrics = make_broker("notifier", settings.nats), NotifierMetrics()
    endpoints = settings.webhooks.load()  # a bad configuration stops the start, loudly

    async def setup(js: JetStreamContext) -> dict[str, Loop]:
        cancels = Cancels(await streams.cancels_bucket(js, settings.nats))
        await cancels.load()
        client = make_client(settings.anthropic)
        readiness.add("api", ApiReachable(client))
        budgets = Budgets(await streams.budgets_bucket(js, settings.nats))
        accounting = Accounting(metrics, default_prices())
        # Every tenant's payload bucket, opened on first use; one for both paths.
        payloads = Payloads(js, settings.nats.payloads_max_age_seconds, settings.nats.replicas,
                            metrics.payload_bytes)
        delivery = Delivery(js, client,
                            await streams.batch_records(js, settings.nats), cancels, settings,
                            accounting, budgets, payloads)
        realtime = RealtimeCalls(js, client, await streams.realtime_calls_bucket(js, settings.nats),
                                 cancels, settings, accounting, budgets, payloads)

        async def deliver_one(msg: Msg) -> None:
            """One ended batch's results. A failure is retried by this or another notifier
            (handle_safely's delayed nak): a handoff is never terminated, but one that
            cannot be read at all."""
            if (ended := await readable(msg, BatchEnded, "handoff")) is None:
                return
            async with kept_alive(msg.in_progress, settings.ack_wait_seconds / 4):
                await delivery.deliver(ended)
            await msg.ack_sync()

        async def deliver_results() -> None:
            async with consumer.pull(js, subjects.BATCH_ENDED, subjects.DURABLE_NOTIFIER,
                                     subjects.STREAM_INTERNAL, ConsumerConfig(
                                         ack_wait=settings.ack_wait_seconds,
                                         max_deliver=-1)) as psub:
                await serve_each(psub, deliver_one, at_once=1, retry_delay=RETRY_DELAY_SECONDS)

        loops: dict[str, Loop] = {"notifier": deliver_results, "realtime": realtime.run,
                                  "cancels": cancels.follow}
        if len(endpoints):  # none configured: intake rejects every name, so no result has one
            loops["webhooks"] = WebhookSender(js, endpoints, settings, metrics).run
        return loops

    return make_app(broker, metrics, settings.nats, setup, readiness=readiness)



def main() -> None:
    """`python -m batchbus.services.notifier`: reads the environment, serves until stopped."""
    settings = load(NotifierSettings)
    run(build(settings), settings.http, default_port=9104)

"""The intake service: `python -m batchbus.services.intake` (`main`)."""

import logging
from decimal import Decimal
from functools import partial

from faststream.asgi import AsgiFastStream
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from batchbus.services.intake.batch_history import BatchHistoryFollower
from batchbus.services.intake.budgets import BudgetGate
from batchbus.services.intake.handlers import TaskIntake
from batchbus.services.intake.live_models import LiveCatalog
from batchbus.services.intake.metrics import IntakeMetrics
from batchbus.services.intake.routing import BatchHistory, Router
from batchbus.services.intake.settings import IntakeSettings
from batchbus.services.intake.validation import Limits
from batchbus.shared import consumer, streams, subjects
from batchbus.shared.anthropic_client import make_client
from batchbus.shared.app import Loop, make_app, run
from batchbus.shared.broker import make_broker
from batchbus.shared.budgets import Budgets
from batchbus.shared.cancels import Cancels
from batchbus.shared.catalog import default_catalog
from batchbus.shared.payloads import Payloads
from batchbus.shared.pricing import default_prices
from batchbus.shared.runtime import BatchHandler, serve_batches
from batchbus.shared.settings import load
from batchbus.shared.webhooks import Endpoints

log = logging.getLogger("batchbus.intake")

HANDLING = 2  # fetched batches handled at once: one's CPU work overlaps another's round trips


def build(settings: IntakeSettings | None = None) -> AsgiFastStream:
    """The intake app; nothing connects or runs until it starts."""
    settings = settings or IntakeSettings()
    broker, metrics = make_broker("intake", settings.nats), IntakeMetrics()
    endpoints = settings.webhooks.load()  # a bad configuration stops the start, loudly
    budget_limits = settings.budgets_usd()
    return make_app(broker, metrics, settings.nats,
                    partial(setup, settings, metrics, endpoints, budget_limits))


async def setup(settings: IntakeSettings, metrics: IntakeMetrics, endpoints: Endpoints,
                budget_limits: dict[str, Decimal], js: JetStreamContext) -> dict[str, Loop]:
    """Once NATS is connected: intake's state loaded, and the loops it runs on."""
    limits = Limits(allowed_models=settings.models(), max_tokens=settings.max_tokens,
                    max_task_bytes=settings.max_task_bytes, webhooks=endpoints.tenants(),
                    max_params_bytes=settings.max_params_bytes)
    cancels = Cancels(await streams.cancels_bucket(js, settings.nats))
    await cancels.load()
    history = BatchHistoryFollower(js, BatchHistory())
    await history.load()  # so the first deadlines are judged with the history
    models = live_models(settings, metrics)
    await models.first()  # the first tasks are judged by what the API says today
    intake = TaskIntake(js, await streams.task_ids_bucket(js, settings.nats), cancels,
                        limits, metrics, Router(history.history, settings.route_policy()),
                        BudgetGate(Budgets(await streams.budgets_bucket(js, settings.nats)),
                                   budget_limits, default_prices(),
                                   metrics.budget_reservations), models,
                        Payloads(js, settings.nats.payloads_max_age_seconds,
                                 settings.nats.replicas, metrics.payload_bytes))
    batch = settings.fetch_batch
    loops: dict[str, Loop] = {"models": models.follow} if models.client else {}
    return loops | {
        "intake": partial(consume, js, subjects.TASKS_ALL, subjects.DURABLE_INTAKE,
                          subjects.STREAM_TASKS, intake.handle_batch, batch),
        "intake-cancels": partial(consume, js, subjects.CANCEL_ALL,
                                  subjects.DURABLE_INTAKE_CANCELS, subjects.STREAM_CANCELS,
                                  intake.handle_cancels, batch),
        "cancels": cancels.follow,
        "batch-history": history.follow,
    }


def live_models(settings: IntakeSettings, metrics: IntakeMetrics) -> LiveCatalog:
    """The catalog kept current from the Models API (the data file alone when told so)."""
    every = settings.models_refresh_seconds
    client = None
    if every > 0 and not settings.anthropic.api_key.get_secret_value():
        log.warning("no ANTHROPIC_API_KEY: models are checked against the catalog file only")
    elif every > 0:
        # Short: a start waits for the first answer, and the data file stands in without one.
        client = make_client(settings.anthropic, max_retries=1).with_options(timeout=10.0)
    return LiveCatalog(default_catalog(), client, metrics, every)


async def consume(js: JetStreamContext, subject: str, durable: str, stream: str,
                  handler: BatchHandler, batch: int) -> None:
    """One pull consumer's loop: HANDLING fetched batches of `batch` at once, and
    max_ack_pending sized as serve_batches asks."""
    async with consumer.pull(js, subject, durable, stream, ConsumerConfig(
            ack_wait=30, max_deliver=-1, max_ack_pending=(HANDLING + 2) * batch)) as psub:
        await serve_batches(psub, handler, batch=batch, at_once=HANDLING)


def main() -> None:
    """`python -m batchbus.services.intake`: reads the environment, serves until stopped."""
    settings = load(IntakeSettings)
    run(build(settings), settings.http, default_port=9101)

"""The batcher service: `python -m services.batcher` or `faststream run services.batcher.app:app`."""

from faststream.asgi import AsgiFastStream
from nats.js import JetStreamContext

from services.batcher.collector import Collector
from services.batcher.settings import BatcherSettings
from services.batcher.submission import Submitter
from shared import streams
from shared.anthropic_client import ApiReachable, make_client
from shared.app import Loop, Readiness, make_app
from shared.broker import make_broker
from shared.cancels import Cancels


def build(settings: BatcherSettings | None = None) -> AsgiFastStream:
    settings = settings or BatcherSettings()
    readiness = Readiness()
    broker, metrics = make_broker("batcher", settings.nats)

    async def setup(js: JetStreamContext) -> dict[str, Loop]:
        client = make_client(settings.anthropic, max_retries=0)
        readiness.add("api", ApiReachable(client))
        submitter = Submitter(
            # No SDK retries on create: a retried POST can create (and bill) a second batch.
            client,
            await streams.batch_records(js, settings.nats),
            await streams.batch_ids_bucket(js, settings.nats),
            metrics, settings.doubt_settle_seconds, settings.anthropic.timeout_seconds,
            settings.intent_stale_seconds)
        cancels = Cancels(await streams.cancels_bucket(js, settings.nats))
        await cancels.load()
        return {"batcher": Collector(js, submitter, cancels, settings, metrics).run,
                "cancels": cancels.follow}

    return make_app(broker, metrics, settings.nats, setup, readiness=readiness)


settings = BatcherSettings()
app = build(settings)

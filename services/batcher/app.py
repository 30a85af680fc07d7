"""The batcher service: `python -m batchbus.services.batcher` (`main`)."""

from faststream.asgi import AsgiFastStream
from nats.js import JetStreamContext

from batchbus.services.batcher.collector import Collector
from batchbus.services.batcher.liveness import Liveness
from batchbus.services.batcher.metrics import BatcherMetrics
from batchbus.services.batcher.settings import BatcherSettings
from batchbus.services.batcher.submission import Submitter
from batchbus.shared import streams
from batchbus.shared.anthropic_client import ApiReachable, make_client
from batchbus.shared.app import Loop, Readiness, make_app, run
from batchbus.shared.broker import make_broker
from batchbus.shared.cancels import Cancels
from batchbus.shared.payloads import Payloads
from batchbus.shared.settings import load


def build(settings: BatcherSettings | None = None) -> AsgiFastStream:
    settings = settings or BatcherSettings()
    readiness = Readiness()
    broker, metrics = make_broker("batcher", settings.nats), BatcherMetrics()

    async def setup(js: JetStreamContext) -> dict[str, Loop]:
        client = make_client(settings.anthropic, max_retries=0)
        readiness.add("api", ApiReachable(client))
        submitter = Submitter(
            # No SDK retries on create: a retried POST can create (and bill) a second batch.
            client,
            await streams.batch_records(js, settings.nats),
            await streams.batch_ids_bucket(js, settings.nats),
            metrics, settings.doubt_settle_seconds, settings.anthropic.timeout_seconds,
            settings.intent_stale_seconds,
            Payloads(js, settings.nats.payloads_max_age_seconds, settings.nats.replicas,
                     metrics.payload_bytes),
            # nats-py gives a JetStream context no public way back to its connection
            Liveness(js._nc, settings.doubt_settle_seconds))
        cancels = Cancels(await streams.cancels_bucket(js, settings.nats))
        await cancels.load()
        return {"batcher": Collector(js, submitter, cancels, settings, metrics).run,
                "cancels": cancels.follow}

    return make_app(broker, metrics, settings.nats, setup, readiness=readiness)



def main() -> None:
    """`python -m batchbus.services.batcher`: reads the environment, serves until stopped."""
    settings = load(BatcherSettings)
    run(build(settings), settings.http, default_port=9102)

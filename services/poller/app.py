"""The poller service: `python -m services.poller` or `faststream run services.poller.app:app`."""

from faststream.asgi import AsgiFastStream
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from services.poller.polling import PollPolicy
from services.poller.settings import PollerSettings
from services.poller.tracker import Tracker
from shared import streams
from shared.anthropic_client import make_client
from shared.app import Loop, make_app
from shared.broker import make_broker
from shared.metrics import Metrics


def build(settings: PollerSettings | None = None) -> AsgiFastStream:
    settings = settings or PollerSettings()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    broker = make_broker("poller", settings.nats, registry)

    async def setup(js: JetStreamContext) -> dict[str, Loop]:
        tracker = Tracker(js, make_client(settings.anthropic),
                          await streams.batches_bucket(js, settings.nats),
                          PollPolicy(settings.interval_seconds, settings.max_interval_seconds),
                          metrics)
        return {"poller": tracker.run}

    return make_app(broker, registry, settings.nats, setup)


settings = PollerSettings()
app = build(settings)

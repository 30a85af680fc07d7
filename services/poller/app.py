"""The poller service: `python -m services.poller` or `faststream run services.poller.app:app`."""

from faststream.asgi import AsgiFastStream
from prometheus_client import CollectorRegistry

from services.poller.polling import PollPolicy
from services.poller.settings import PollerSettings
from services.poller.tracker import Tracker
from shared import streams
from shared.anthropic_client import make_client
from shared.app import Supervised, make_app
from shared.broker import make_broker
from shared.metrics import Metrics


def build(settings: PollerSettings | None = None) -> AsgiFastStream:
    settings = settings or PollerSettings()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    broker = make_broker("poller", settings.nats, registry)
    loops: list[Supervised] = []

    async def start() -> None:
        js = broker.connection.jetstream()
        await streams.ensure_streams(js, settings.nats)
        tracker = Tracker(js, make_client(settings.anthropic),
                          await streams.batches_bucket(js, settings.nats),
                          PollPolicy(settings.interval_seconds, settings.max_interval_seconds),
                          metrics)
        loops.append(Supervised("poller", tracker.run))
        await loops[-1].start()

    async def stop() -> None:
        for loop in loops:
            await loop.stop()

    return make_app(broker, registry, on_startup=[start], on_shutdown=[stop])


settings = PollerSettings()
app = build(settings)

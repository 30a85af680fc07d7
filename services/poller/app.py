"""The poller service: `python -m services.poller` or `faststream run services.poller.app:app`."""

from faststream.asgi import AsgiFastStream
from nats.js import JetStreamContext

from services.poller.settings import PollerSettings
from services.poller.tracker import Tracker
from shared import streams, subjects
from shared.anthropic_client import ApiReachable, make_client
from shared.app import Loop, Readiness, make_app
from shared.broker import make_broker
from shared.lease import Lease


def build(settings: PollerSettings | None = None) -> AsgiFastStream:
    settings = settings or PollerSettings()
    readiness = Readiness()
    broker, metrics = make_broker("poller", settings.nats)

    async def setup(js: JetStreamContext) -> dict[str, Loop]:
        lease = Lease(await streams.leases_bucket(js, settings.nats), subjects.LEASE_POLLER,
                      settings.lease_seconds)
        client = make_client(settings.anthropic)
        readiness.add("api", ApiReachable(client))
        tracker = Tracker(js, client,
                          await streams.batch_records(js, settings.nats), lease, settings,
                          metrics)
        return {"poller": tracker.run}

    return make_app(broker, metrics, settings.nats, setup, readiness=readiness)


settings = PollerSettings()
app = build(settings)

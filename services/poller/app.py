"""The poller service: `python -m batchbus.services.poller`, or
`faststream run --factory batchbus.services.poller.app:build`."""

from faststream.asgi import AsgiFastStream
from nats.js import JetStreamContext

from batchbus.services.poller.settings import PollerSettings
from batchbus.services.poller.tracker import Tracker
from batchbus.shared import streams, subjects
from batchbus.shared.anthropic_client import ApiReachable, make_client
from batchbus.shared.app import Loop, Readiness, make_app, run
from batchbus.shared.broker import make_broker
from batchbus.shared.lease import Lease


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



def main() -> None:
    """`python -m batchbus.services.poller`: reads the environment, serves until stopped."""
    settings = PollerSettings()
    run(build(settings), settings.http, default_port=9103)

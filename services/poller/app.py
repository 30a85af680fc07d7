"""The poller service: `python -m batchbus.services.poller` (`main`)."""

from faststream.asgi import AsgiFastStream
from nats.js import JetStreamContext

from batchbus.services.poller.lease import Lease
from batchbus.services.poller.metrics import PollerMetrics
from batchbus.services.poller.settings import PollerSettings
from batchbus.services.poller.tracker import Tracker
from batchbus.shared import streams, subjects
from batchbus.shared.anthropic_client import ApiReachable, make_client
from batchbus.shared.app import Loop, Readiness, make_app, run
from batchbus.shared.broker import make_broker
from batchbus.shared.settings import load


def build(settings: PollerSettings | None = None) -> AsgiFastStream:
    settings = settings or PollerSettings()
    readiness = Readiness()
    broker, metrics = make_broker("poller", settings.nats), PollerMetrics()

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
    settings = load(PollerSettings)
    run(build(settings), settings.http, default_port=9103)

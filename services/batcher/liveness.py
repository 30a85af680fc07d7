"""Whether the batcher run that wrote an intent is still alive, so a restarted batcher need not
wait out BATCHER_INTENT_STALE_SECONDS for a predecessor that was killed mid-create.

Every run answers requests on its own subject (`batchbus.runs.batcher.<run>`) for as long
as its NATS connection lives. A killed process's connection closes with it, and NATS answers
a request to a subject nobody listens on at once ("no responders"). A paused or merely slow
run still holds its subscription: its request times out, and it counts as alive, so only the
stale age can settle its intents, as before.

A dead run's create may still have reached the API just before it died: its intent is settled
only once the run has been seen gone for BATCHER_DOUBT_SETTLE_SECONDS, the time any create in
flight has to show up in the list of batches, as for a create whose answer was lost.
"""

import logging
import uuid
from time import monotonic

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from batchbus.shared import subjects

log = logging.getLogger("batchbus.batcher")

PING_TIMEOUT = 2.0  # seconds; an answer takes a round trip, a paused run never answers


class Liveness:
    def __init__(self, nc: Client | None, settle_seconds: float) -> None:
        self.nc = nc  # None: no pings (a unit test's batcher); other runs count as alive
        self.run_id = uuid.uuid4().hex  # this run's name on the intents it writes
        self.settle_seconds = settle_seconds
        self._gone_since: dict[str, float] = {}  # runs found gone -> when first found so

    async def serve(self) -> None:
        """Answers pings for this run, from now until its connection closes."""
        if self.nc is not None:
            await self.nc.subscribe(subjects.batcher_run(self.run_id), cb=_answer)

    def connected(self) -> bool:
        """Whether this run can still answer pings (a create in flight stops when not)."""
        return self.nc is None or self.nc.is_connected

    async def dead_long_enough(self, run_id: str | None) -> bool:
        """Whether `run_id` is gone now and was already the settle time ago: its intents can
        no longer be answered by a create of its own. Asked again each time, so a run that
        was only cut off for a moment (a reconnect) is alive again."""
        if run_id is None or run_id == self.run_id or self.nc is None:
            return False
        if not await self._gone(run_id):
            self._gone_since.pop(run_id, None)
            return False
        if run_id not in self._gone_since:
            log.warning("batcher run %s is gone; its intents are settled in %.0fs if it stays "
                        "so", run_id, self.settle_seconds)
            self._gone_since[run_id] = monotonic()
        return monotonic() - self._gone_since[run_id] >= self.settle_seconds

    def due_at(self) -> float | None:
        """When (monotonic) the earliest gone run's intents may be settled, or None."""
        if not self._gone_since:
            return None
        return min(self._gone_since.values()) + self.settle_seconds

    def settled(self, run_ids: set[str]) -> None:
        """Forgets gone runs that have no intent left (`run_ids`: owners of live intents)."""
        self._gone_since = {r: t for r, t in self._gone_since.items() if r in run_ids}

    async def _gone(self, run_id: str) -> bool:
        assert self.nc is not None
        try:
            await self.nc.request(subjects.batcher_run(run_id), b"", timeout=PING_TIMEOUT)
        except NoRespondersError:
            return True
        except NatsTimeout:
            return False  # listening but not answering: paused, or busy
        return False


async def _answer(msg: Msg) -> None:
    await msg.respond(b"")

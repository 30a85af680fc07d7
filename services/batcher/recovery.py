"""What earlier runs and other replicas have in flight, read back from durable state.

A task message that comes back must not go into a second batch: after a crash, after an ack
lost on the way, or as a stale redelivery that reached the client before its ack reached the
server. If its attempt is in a recorded batch it is acknowledged; if it is in an intent whose
create is unresolved it waits. Stale intents are settled by any replica.
"""

import logging
from datetime import UTC, datetime, timedelta
from time import monotonic

from anthropic.types.messages import MessageBatch

from batchbus.services.batcher.submission import Submitter
from batchbus.shared.models import BatchRecord

log = logging.getLogger("batchbus.batcher")

REFRESH_EVERY = 1.0  # seconds; redeliveries come in bursts, one read serves them all


class Guard:
    def __init__(self, submitter: Submitter, stale_after: float) -> None:
        self.submitter = submitter
        self.stale_after = timedelta(seconds=stale_after)
        self.skip: set[int] = set()  # stream seqs in a recorded batch
        self.hold: set[int] = set()  # stream seqs in an intent not yet resolved
        # Request counts of intents not yet resolved. A create in doubt is resolved by finding
        # an unowned batch of its count in its creation window, so two such intents of one
        # count could never tell their batches apart: a new batch avoids these counts.
        self.unresolved_counts: set[int] = set()
        self._manifests: dict[str, frozenset[int]] = {}
        self._refreshed = float("-inf")

    async def refresh(self, force: bool = False) -> None:
        if not force and monotonic() - self._refreshed < REFRESH_EVERY:
            return
        self._refreshed = monotonic()
        skip: set[int] = set()
        hold: set[int] = set()
        live = await self.submitter.records.all()
        for record in live:
            if record.state == "intent":
                hold |= await self._seqs(record)
            else:  # kept until delivered and acked, which outlasts any stale redelivery
                skip |= await self._seqs(record)
        self.skip, self.hold = skip, hold
        self.unresolved_counts = {r.requests for r in live if r.state == "intent"}
        keep = {r.intent_id for r in live}
        self._manifests = {k: v for k, v in self._manifests.items() if k in keep}

    def note_recorded(self, intent_id: str, seqs: frozenset[int]) -> None:
        """Our own new batch: its messages are guarded before the next read of the records,
        and that read need not fetch its manifest (a manifest never changes once written)."""
        self.skip |= seqs
        self._manifests[intent_id] = seqs

    async def settle_stale(self) -> list[BatchRecord]:
        """Resolves intents no live create can still answer, for they are stale or their
        run is gone (Liveness); returns the adopted batches."""
        adopted = []
        now = datetime.now(UTC)
        intents = [r for r in await self.submitter.records.all() if r.state == "intent"]
        liveness = self.submitter.liveness
        liveness.settled({r.owner for r in intents if r.owner})
        dead = {owner for owner in {r.owner for r in intents}
                if await liveness.dead_long_enough(owner)}
        for record in intents:
            if now - record.intent_at < self.stale_after and record.owner not in dead:
                continue
            found = await self.submitter.records.read(record.intent_id)
            if found is None or found[0].state != "intent":
                continue
            resolution = await self.submitter.resolve(record)
            if isinstance(resolution, MessageBatch):
                adopted.append(await self.submitter.record(record, resolution))
            elif resolution == "absent":
                await self._forget(record, found[1])
        if adopted:
            await self.refresh(force=True)
        return adopted

    async def release_acked(self, ack_floor: int) -> None:
        """Marks records acked once the consumer's ack floor has passed all their tasks
        (they were acked by a run that died before saying so)."""
        for record in await self.submitter.records.all():
            if record.state == "intent" or record.acked:
                continue
            seqs = await self._seqs(record)
            if seqs and max(seqs) <= ack_floor:
                await self.submitter.records.settle(
                    record.intent_id, lambda r: r.model_copy(update={"acked": True}))

    async def _forget(self, record: BatchRecord, revision: int) -> None:
        if await self.submitter.records.forget(record, revision):
            log.warning("stale intent %s created nothing; its tasks go again", record.intent_id)

    async def _seqs(self, record: BatchRecord) -> frozenset[int]:
        if record.intent_id not in self._manifests:
            manifest = await self.submitter.records.manifest(record.intent_id)
            self._manifests[record.intent_id] = frozenset(e.accepted_seq for e in manifest)
        return self._manifests[record.intent_id]

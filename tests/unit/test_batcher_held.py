"""What the batcher holds of a task (encoded once, at take) and what its guard reads back."""

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from nats.aio.msg import Msg

from batchbus.services.batcher.batching import custom_id
from batchbus.services.batcher.recovery import Guard
from batchbus.services.batcher.submission import Pending, Submitter
from batchbus.shared.models import AcceptedTask, BatchRecord, Cost, ManifestEntry, Reservation


def delivered(seq: int, task: AcceptedTask) -> Msg:
    # The reply subject JetStream gives a delivered message (stream seq `seq`).
    reply = f"$JS.ACK.internal.batcher.1.{seq}.{seq}.1700000000000000000.0"
    return Msg(cast(Any, None), "batchbus.internal.accepted.acme", reply,
               task.model_dump_json().encode())


PARAMS = {"model": "claude-sonnet-4-6", "max_tokens": 5,
          "messages": [{"role": "user", "content": "héllo 🚚"}]}


def accepted(task_id: str = "t-1", **kw: Any) -> AcceptedTask:
    return AcceptedTask(tenant="acme", task_id=task_id, published_at=datetime.now(UTC),
                        **{"params": PARAMS, **kw})


def test_a_held_task_is_its_request_and_its_manifest_row() -> None:
    task = accepted(attempt=2, metadata={"k": [1, 0.5]}, webhook="hook",
                    reservation=Reservation(day=date(2026, 11, 27), usd=Decimal("0.30")))
    item = Pending.of(delivered(42, task), task)
    cid = custom_id("acme", "t-1", 2)
    assert json.loads(item.request) == {"custom_id": cid, "params": task.params}
    assert item.size == len(item.request) + 1  # its comma in the body
    assert (item.seq, item.tenant, item.task_id, item.published_at) == (
        42, "acme", "t-1", task.published_at)
    assert item.entry() == ManifestEntry(
        custom_id=cid, tenant="acme", task_id="t-1", attempt=2, model="claude-sonnet-4-6",
        metadata={"k": [1, 0.5]}, published_at=task.published_at, accepted_seq=42,
        webhook="hook", reservation=task.reservation)
    assert item.row == item.entry().to_row()


def test_a_held_task_carries_what_its_result_needs_and_its_betas() -> None:
    prior = Cost(batch_usd=0.01, realtime_usd=0.02, saved_usd=0.01)
    task = accepted(attempt=2, warnings=["w"], fallback_model="claude-sonnet-5-5",
                    prior_cost=prior, betas=["files-api-2025-04-14"])
    item = Pending.of(delivered(5, task), task)
    assert (item.entry().warnings, item.entry().fallback_model, item.entry().prior_cost) == (
        ["w"], "claude-sonnet-5-5", prior)
    assert item.betas == ("files-api-2025-04-14",)
    assert json.loads(item.request)["params"] == task.params  # betas go as a header, not here
    assert item.row == item.entry().to_row()


def test_requests_that_share_a_prompt_are_grouped() -> None:
    one, two = accepted("a"), accepted("b", params={**PARAMS, "system": "s"})
    assert Pending.of(delivered(1, one), one).prefix != Pending.of(delivered(2, two), two).prefix
    again = accepted("c")
    assert Pending.of(delivered(3, again), again).prefix == Pending.of(delivered(1, one), one).prefix


class Records:
    """The part of BatchRecords the guard reads, counting manifest reads."""

    def __init__(self) -> None:
        self.live: list[BatchRecord] = []
        self.manifests: dict[str, list[int]] = {}
        self.reads: list[str] = []

    async def all(self) -> list[BatchRecord]:
        return list(self.live)

    async def manifest(self, key: str) -> list[ManifestEntry]:
        self.reads.append(key)
        return [ManifestEntry(custom_id=f"c{s}", tenant="acme", task_id=f"t{s}", attempt=1,
                              model="m", metadata={}, published_at=datetime.now(UTC),
                              accepted_seq=s) for s in self.manifests.get(key, [])]

    def add(self, intent_id: str, state: str, seqs: list[int]) -> BatchRecord:
        record = BatchRecord(intent_id=intent_id, state=cast(Any, state), requests=len(seqs),
                             bytes=100, intent_at=datetime.now(UTC) - timedelta(seconds=1))
        self.live.append(record)
        self.manifests[intent_id] = seqs
        return record


class FakeSubmitter:
    def __init__(self, records: Records) -> None:
        self.records = records


async def test_the_guard_reads_each_manifest_once_and_never_its_own() -> None:
    records = Records()
    guard = Guard(cast(Submitter, FakeSubmitter(records)), stale_after=300)
    records.add("theirs", "submitted", [1, 2])
    records.add("doubt", "intent", [3, 4, 5])
    await guard.refresh(force=True)
    assert (guard.skip, guard.hold, guard.unresolved_counts) == ({1, 2}, {3, 4, 5}, {3})

    # Our own batch: written by us, so its seqs are known without reading its manifest.
    records.add("ours", "submitted", [6, 7])
    guard.note_recorded("ours", frozenset({6, 7}))
    assert guard.skip == {1, 2, 6, 7}
    records.live = [r for r in records.live if r.intent_id != "theirs"]  # retired
    await guard.refresh(force=True)
    await guard.refresh(force=True)
    assert (guard.skip, guard.hold, guard.unresolved_counts) == ({6, 7}, {3, 4, 5}, {3})
    # The intent in doubt is adopted: its tasks are now to be skipped, not held.
    records.live = [r.model_copy(update={"state": "submitted"}) for r in records.live]
    await guard.refresh(force=True)
    assert (guard.skip, guard.hold, guard.unresolved_counts) == ({3, 4, 5, 6, 7}, set(), set())
    assert sorted(records.reads) == ["doubt", "theirs"]

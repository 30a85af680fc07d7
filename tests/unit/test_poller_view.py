"""The poller works out what it needs of the live records once per change: a tick while
nothing changed does not walk every batch in flight, and a batch past its expiry's grace is
still handed off when its time comes."""

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from batchbus.services.poller.metrics import PollerMetrics
from batchbus.services.poller.settings import PollerSettings
from batchbus.services.poller.tracker import Tracker, View
from batchbus.shared.models import BatchRecord

GRACE = timedelta(hours=1)


def record(n: int, state: str = "submitted", expires_in: timedelta = timedelta(hours=20)
           ) -> BatchRecord:
    now = datetime.now(UTC)
    return BatchRecord(intent_id=f"i{n}", state=state, requests=1, bytes=10,
                       intent_at=now, batch_id=f"b{n}", created_at=now - timedelta(hours=1),
                       expires_at=now + expires_in)


class Records:
    """The records a tick lists, and the bucket version they are as of."""

    def __init__(self, live: list[BatchRecord]) -> None:
        self.live, self.version, self.listings = live, 1, 0

    async def all(self) -> list[BatchRecord]:
        self.listings += 1
        return list(self.live)


def tracker(records: Records) -> tuple[Tracker, list[str]]:
    made = Tracker(cast(Any, None), cast(Any, None), cast(Any, records), cast(Any, None),
                   PollerSettings(), PollerMetrics())
    made.cadence.next_at = float("inf")  # no sweep: these ticks only look at the records
    handed: list[str] = []

    async def hand_off(r: BatchRecord, available: bool) -> None:
        handed.append(f"{r.batch_id}:{available}")

    made._hand_off = hand_off  # type: ignore[method-assign,assignment]
    return made, handed


def test_a_view_holds_the_batches_to_sweep_and_the_first_overdue_moment() -> None:
    live = [record(1), record(2, expires_in=timedelta(hours=3)), record(3, state="ended")]
    view = View.of(live, GRACE)
    assert sorted(view.tracked) == ["b1", "b2"]
    assert view.states == {"submitted": 2, "ended": 1}
    assert view.overdue_at == live[1].expires_at + GRACE  # type: ignore[operator]


async def test_ticks_rebuild_the_view_only_when_the_records_change() -> None:
    records = Records([record(n) for n in range(500)])
    poller, handed = tracker(records)
    await poller.step()
    first = poller.view
    for _ in range(10):
        await poller.step()
    assert poller.view is first and handed == []  # unchanged: the same view, nothing due
    records.live, records.version = records.live[:10], 2
    await poller.step()
    assert poller.view is not first and len(poller.view.tracked) == 10


async def test_a_batch_past_its_expirys_grace_is_handed_off_unavailable() -> None:
    records = Records([record(1), record(2, expires_in=-GRACE - timedelta(seconds=1))])
    poller, handed = tracker(records)
    await poller.step()
    assert handed == ["b2:False"]

"""Manifest rows: positional, compact, and readable across added fields."""

import json
from datetime import UTC, date, datetime
from decimal import Decimal

from batchbus.shared.models import Cost, ManifestEntry, Reservation


def entry(**extra: object) -> ManifestEntry:
    return ManifestEntry(custom_id="c-a1", tenant="acme", task_id="t1", attempt=1,
                         model="claude-sonnet-4-6", metadata={"k": 1},
                         published_at=datetime(2026, 11, 27, tzinfo=UTC), accepted_seq=7,
                         **extra)  # type: ignore[arg-type]


def test_a_row_round_trips_with_every_field() -> None:
    full = entry(webhook="crm", reservation=Reservation(day=date(2026, 11, 27),
                                                       usd=Decimal("0.0123")))
    assert ManifestEntry.from_row(full.to_row()) == full


def test_a_row_without_options_stays_as_short_as_before() -> None:
    plain = entry()
    assert len(json.loads(plain.to_row())) == 8
    assert ManifestEntry.from_row(plain.to_row()) == plain


def test_what_the_notifier_needs_of_the_task_round_trips() -> None:
    cost = Cost(batch_usd=0.25, realtime_usd=0.5, saved_usd=0.25)
    full = entry(webhook="crm", warnings=["claude-opus-4-5 retires on 2027-01-22"],
                 fallback_model="claude-sonnet-5-5", prior_cost=cost)
    assert len(json.loads(full.to_row())) == 13
    assert ManifestEntry.from_row(full.to_row()) == full


def test_no_warnings_are_absent_from_the_row() -> None:
    # Trailing: left out. Before a later field: a null, read back as no warnings.
    assert len(json.loads(entry(warnings=[]).to_row())) == 8
    fallback = entry(fallback_model="claude-sonnet-5-5")
    row = json.loads(fallback.to_row())
    assert row[10:] == [None, "claude-sonnet-5-5"]
    assert ManifestEntry.from_row(fallback.to_row()) == fallback
    assert ManifestEntry.from_row(fallback.to_row()).warnings == []
    later = entry(prior_cost=Cost(batch_usd=1.0, realtime_usd=2.0, saved_usd=1.0))
    assert json.loads(later.to_row())[10:12] == [None, None]
    assert ManifestEntry.from_row(later.to_row()) == later


def test_rows_written_before_the_new_fields_still_read() -> None:
    old = ["c-a1", "acme", "t1", 1, "claude-sonnet-4-6", {"k": 1}, "2026-11-27T00:00:00+00:00", 7]
    reservation = {"day": "2026-11-27", "usd": "0.0123"}
    for row in (old, [*old, "crm"], [*old, None, reservation]):
        read = ManifestEntry.from_row(json.dumps(row).encode())
        assert (read.warnings, read.fallback_model, read.prior_cost) == ([], None, None)
    assert ManifestEntry.from_row(json.dumps([*old, None, reservation]).encode()) == entry(
        reservation=Reservation(day=date(2026, 11, 27), usd=Decimal("0.0123")))

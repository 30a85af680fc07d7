"""Manifest rows: positional, compact, and readable across added fields."""

import json
from datetime import UTC, date, datetime
from decimal import Decimal

from batchbus.shared.models import ManifestEntry, Reservation


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

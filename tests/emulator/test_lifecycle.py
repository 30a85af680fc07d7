"""Lifecycle on the controllable clock: processing, counters, expiry at 24 h, archival at 29 d."""

from __future__ import annotations

from datetime import timedelta

import anthropic
import pytest

from batchbus.emulator import EmulatorHandle
from tests.emulator.helpers import item, results_by_id, wait_until

DAY = 24 * 3600.0


def test_batch_ends_after_processing_time_in_real_time(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    emu.configure(processing_seconds=0.2)
    batch = client.messages.batches.create(requests=[item("a")])
    assert batch.processing_status == "in_progress"
    wait_until(lambda: client.messages.batches.retrieve(batch.id).processing_status == "ended")
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.ended_at == batch.created_at + timedelta(seconds=0.2)
    assert ended.request_counts.succeeded == 1 and ended.request_counts.processing == 0


def test_time_scale_speeds_up_processing(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    emu.configure(processing_seconds=600, time_scale=10_000)
    batch = client.messages.batches.create(requests=[item("a")])
    wait_until(lambda: client.messages.batches.retrieve(batch.id).processing_status == "ended")


def test_at_end_counts_stay_zero_until_ended(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    emu.configure(processing_seconds=100)
    batch = client.messages.batches.create(requests=[item(f"r{n}") for n in range(4)])
    emu.advance(60)
    counts = client.messages.batches.retrieve(batch.id).request_counts
    assert (counts.processing, counts.succeeded) == (4, 0)


def test_incremental_counts_move_during_processing(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    emu.configure(processing_seconds=100, counts_mode="incremental")
    requests = [item("r0"), item("r1", metadata={"user_id": "emulate:errored:api_error"})]
    batch = client.messages.batches.create(requests=[*requests, item("r2"), item("r3")])
    emu.advance(60)
    counts = client.messages.batches.retrieve(batch.id).request_counts
    assert (counts.processing, counts.succeeded, counts.errored) == (2, 1, 1)
    emu.advance(50)
    counts = client.messages.batches.retrieve(batch.id).request_counts
    assert (counts.processing, counts.succeeded, counts.errored) == (0, 3, 1)


def test_cancel_midway_keeps_finished_requests(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    emu.configure(processing_seconds=100, counts_mode="incremental")
    batch = client.messages.batches.create(requests=[item(f"r{n}") for n in range(4)])
    emu.advance(60)
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.request_counts.succeeded == 2 and canceling.request_counts.processing == 2
    emu.advance(1)
    counts = client.messages.batches.retrieve(batch.id).request_counts
    assert (counts.succeeded, counts.canceled, counts.processing) == (2, 2, 0)
    kinds = {cid: r.type for cid, r in results_by_id(client, batch.id).items()}
    assert kinds == {"r0": "succeeded", "r1": "succeeded", "r2": "canceled", "r3": "canceled"}


@pytest.mark.parametrize(("processing_days", "expired"), [(10, 4), (2, 2)])
def test_unfinished_requests_expire_at_24h(
    client: anthropic.Anthropic, emu: EmulatorHandle, processing_days: int, expired: int
) -> None:
    emu.configure(processing_seconds=processing_days * DAY)
    batch = client.messages.batches.create(requests=[item(f"r{n}") for n in range(4)])
    emu.advance(DAY - 60)
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    emu.advance(120)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at == ended.expires_at
    assert ended.request_counts.expired == expired
    assert ended.request_counts.succeeded == 4 - expired
    lines = results_by_id(client, batch.id)
    assert sum(r.type == "expired" for r in lines.values()) == expired
    assert lines["r3"].model_dump() == {"type": "expired"}


def test_results_are_archived_after_29_days(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    batch = client.messages.batches.create(requests=[item("a")])
    emu.advance(28 * DAY)
    assert client.messages.batches.retrieve(batch.id).archived_at is None
    assert len(results_by_id(client, batch.id)) == 1
    emu.advance(DAY + 60)
    archived = client.messages.batches.retrieve(batch.id)
    assert archived.archived_at == batch.created_at + timedelta(days=29)
    assert archived.processing_status == "ended"
    with pytest.raises(anthropic.NotFoundError, match="has no available results"):
        client.messages.batches.results(batch.id)

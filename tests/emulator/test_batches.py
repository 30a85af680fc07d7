"""The six batch operations through the real SDK: shapes, results file, list paging, delete."""

from __future__ import annotations

import re
from datetime import timedelta

import anthropic
import pytest

from batchbus.emulator import EmulatorHandle
from tests.emulator.helpers import error_body, item, results_by_id

BATCH_ID = re.compile(r"^msgbatch_01[0-9A-Za-z]{22}$")
REQUEST_ID = re.compile(r"^req_[0-9A-Za-z]{24}$")


def test_create_returns_an_in_progress_batch(client: anthropic.Anthropic) -> None:
    raw = client.messages.batches.with_raw_response.create(
        requests=[item("a"), item("b"), item("c")]
    )
    batch = raw.parse()
    assert REQUEST_ID.match(raw.headers["request-id"])
    assert BATCH_ID.match(batch.id)
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 3
    assert batch.request_counts.succeeded == 0
    assert batch.results_url is None and batch.ended_at is None and batch.archived_at is None
    assert batch.expires_at - batch.created_at == timedelta(hours=24)


def test_retrieve_unknown_batch_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.batches.retrieve("msgbatch_01nope")
    assert caught.value.api_message == "Message Batch msgbatch_01nope not found."
    assert error_body(caught.value)["request_id"] == caught.value.request_id
    assert REQUEST_ID.match(caught.value.request_id or "")


def test_results_before_end_are_not_available(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    batch = client.messages.batches.create(requests=[item("a")])
    with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
        client.messages.batches.results(batch.id)
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.get(f"/v1/messages/batches/{batch.id}/results", cast_to=object)
    assert caught.value.api_message == f"Message Batch {batch.id} has no available results."


def test_ended_batch_serves_one_shuffled_line_per_request(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    ids = [f"req-{n:02d}" for n in range(30)]
    batch = client.messages.batches.create(requests=[item(cid) for cid in ids])
    emu.advance(2)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.results_url == f"{emu.url}/v1/messages/batches/{batch.id}/results"
    raw = client.messages.batches.with_raw_response.results(batch.id)
    body = raw.http_response.read()
    assert raw.headers["content-type"] == "application/x-jsonl"
    lines = body.decode().split("\n")
    assert lines[-1] == "" and all(lines[:-1]), "newline-terminated, no blank lines"
    seen = [line.custom_id for line in client.messages.batches.results(batch.id)]
    assert sorted(seen) == ids and seen != ids
    again = client.messages.batches.with_raw_response.results(batch.id).http_response.read()
    assert again == body, "results are stable across downloads"


def test_list_pages_newest_first_in_both_directions(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    created = [client.messages.batches.create(requests=[item("a")]).id for _ in range(5)]
    newest_first = created[::-1]
    first_page = client.messages.batches.list(limit=2)
    assert [b.id for b in first_page.data] == newest_first[:2] and first_page.has_more
    assert first_page.first_id == newest_first[0] and first_page.last_id == newest_first[1]
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first
    backwards = client.messages.batches.list(limit=2, before_id=created[0])
    assert [b.id for b in backwards.data] == newest_first[2:4] and backwards.has_more
    assert [b.id for b in backwards] == newest_first[2:4] + newest_first[:2]
    after = client.messages.batches.list(after_id=newest_first[2])
    assert [b.id for b in after.data] == newest_first[3:] and after.has_more is False


@pytest.mark.parametrize("limit", [0, 1001])
def test_list_limit_out_of_range_is_400(client: anthropic.Anthropic, limit: int) -> None:
    with pytest.raises(anthropic.BadRequestError, match="limit"):
        client.messages.batches.list(limit=limit)


def test_list_of_nothing_is_an_empty_page(client: anthropic.Anthropic) -> None:
    page = client.messages.batches.list()
    assert page.data == [] and page.has_more is False and page.first_id is None


def test_cancel_goes_through_canceling_to_ended(
    client: anthropic.Anthropic, emu: EmulatorHandle
) -> None:
    emu.configure(processing_seconds=100)
    batch = client.messages.batches.create(requests=[item("a"), item("b")])
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert canceling.request_counts.processing == 2
    again = client.messages.batches.cancel(batch.id)
    assert again.processing_status == "canceling"
    assert again.cancel_initiated_at == canceling.cancel_initiated_at
    emu.advance(0.5)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.canceled == 2
    assert {r.type for r in results_by_id(client, batch.id).values()} == {"canceled"}
    with pytest.raises(anthropic.BadRequestError, match="already ended"):
        client.messages.batches.cancel(batch.id)


def test_delete_only_once_ended(client: anthropic.Anthropic, emu: EmulatorHandle) -> None:
    batch = client.messages.batches.create(requests=[item("a")])
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.delete(batch.id)
    assert caught.value.api_message == (
        "In progress batches cannot be deleted. Consider canceling the batch instead."
    )
    emu.advance(2)
    deleted = client.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)
    with pytest.raises(anthropic.NotFoundError):
        client.get(f"/v1/messages/batches/{batch.id}/results", cast_to=object)
    assert list(client.messages.batches.list()) == []


async def test_async_client_round_trip(
    aclient: anthropic.AsyncAnthropic, emu: EmulatorHandle
) -> None:
    batch = await aclient.messages.batches.create(requests=[item("a"), item("b")])
    emu.advance(2)
    assert (await aclient.messages.batches.retrieve(batch.id)).processing_status == "ended"
    lines = [line async for line in await aclient.messages.batches.results(batch.id)]
    assert sorted(line.custom_id for line in lines) == ["a", "b"]
    assert [b.id async for b in aclient.messages.batches.list()] == [batch.id]

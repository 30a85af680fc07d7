"""shared/records.py against a real nats-server: a retired record leaves nothing behind in
the bucket, so listing the live records does not grow with every batch ever made."""

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from launcher.nats_server import NatsServer, start_nats
from shared import streams
from shared.models import BatchRecord
from shared.records import KV_STREAM, KV_SUBJECTS
from shared.settings import NatsSettings


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A server of its own: the records made here (an intent left unresolved, rows naming
    stream seqs) would hold back the tasks of the pipeline tests on the shared one."""
    server = start_nats(str(tmp_path / "nats"))
    yield server
    server.stop()


@pytest.fixture
async def js(own_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(own_server.url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


def intent() -> BatchRecord:
    return BatchRecord(intent_id=uuid.uuid4().hex, state="intent", requests=1, bytes=10,
                       intent_at=datetime.now(UTC))


async def keys_in_bucket(js: JetStreamContext, *keys: str) -> set[str]:
    """Which of `keys` still have a message (a value or a delete marker) in the bucket."""
    info = await js.stream_info(KV_STREAM, subjects_filter=KV_SUBJECTS + ">")
    return {k for k in keys if KV_SUBJECTS + k in (info.state.subjects or {})}


async def test_retired_and_forgotten_records_leave_no_marker(js: JetStreamContext,
                                                             own_server: NatsServer) -> None:
    records = await streams.batch_records(js, NatsSettings(url=own_server.url))
    done, dropped, live = intent(), intent(), intent()
    for record in (done, dropped, live):
        await records.create(record, [b'["c-a1","acme","t-1",1,"m",{},"2026-11-27T00:00:00Z",1]'])
    await records.settle(done.intent_id, lambda r: r.model_copy(
        update={"state": "delivered", "acked": True}))
    found = await records.read(dropped.intent_id)
    assert found is not None
    assert await records.forget(found[0], found[1])

    assert await keys_in_bucket(js, done.intent_id, dropped.intent_id, live.intent_id) == {
        live.intent_id}
    assert [r.intent_id for r in await records.all()
            if r.intent_id in {done.intent_id, dropped.intent_id, live.intent_id}] == [
        live.intent_id]
    assert await records.manifest(done.intent_id) == []


async def test_listing_purges_a_marker_a_crash_left(js: JetStreamContext,
                                                    own_server: NatsServer) -> None:
    """A retirement cut short after the delete (or by an older version) left a marker."""
    records = await streams.batch_records(js, NatsSettings(url=own_server.url))
    cut_short = intent()
    await records.create(cut_short, [])
    await records.kv.delete(cut_short.intent_id)
    assert await keys_in_bucket(js, cut_short.intent_id) == {cut_short.intent_id}
    assert cut_short.intent_id not in {r.intent_id for r in await records.all()}
    assert await keys_in_bucket(js, cut_short.intent_id) == set()
